//! Kubernetes resource quantities (`500m`, `1`, `0.25`, `512Mi`, `1G`, `1e3`), as Pod manifests
//! write CPU and memory. Pure: a string in, a number of base units (cores or bytes) out.
//!
//! Grammar (k8s.io/apimachinery `resource.Quantity`): an optional sign, a decimal number
//! (`1`, `1.5`, `.5`), then at most one suffix: binary SI (`Ki Mi Gi Ti Pi Ei`), decimal SI
//! (`n u m k M G T P E`) or a decimal exponent (`e3`, `E-2`).

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantityError {
    /// The quantity is empty.
    #[error("the quantity is empty")]
    Empty,
    /// The numeric part is not a decimal number.
    #[error("'{0}' is not a number followed by an optional unit (e.g. 500m, 1, 512Mi, 1Gi)")]
    Malformed(String),
    /// The unit is not one Kubernetes knows.
    #[error("unknown unit '{unit}' in '{text}' (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3)")]
    UnknownUnit { text: String, unit: String },
}

const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1024.0 * 1024.0),
    ("Gi", 1024.0 * 1024.0 * 1024.0),
    ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("", 1.0),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// Parse a quantity into base units (cores for CPU, bytes for memory).
pub fn parse_quantity(text: &str) -> Result<f64, QuantityError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let malformed = || QuantityError::Malformed(text.to_string());
    let bytes = s.as_bytes();
    let mut i = 0;
    if matches!(bytes[0], b'+' | b'-') {
        i = 1;
    }
    let (mut digits, mut dots) = (0, 0);
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        if bytes[i] == b'.' {
            dots += 1;
        } else {
            digits += 1;
        }
        i += 1;
    }
    if digits == 0 || dots > 1 {
        return Err(malformed());
    }
    // `i` only ever advanced over ASCII bytes, so it is a char boundary.
    let (number, suffix) = s.split_at(i);
    let mantissa: f64 = number.parse().map_err(|_| malformed())?;
    let factor = if let Some(&(_, f)) = SUFFIXES.iter().find(|(u, _)| *u == suffix) {
        f
    } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) || unsigned.len() > 3 {
            return Err(QuantityError::UnknownUnit { text: text.to_string(), unit: suffix.to_string() });
        }
        let e: i32 = exp.parse().map_err(|_| malformed())?;
        10f64.powi(e)
    } else {
        return Err(QuantityError::UnknownUnit { text: text.to_string(), unit: suffix.to_string() });
    };
    let value = mantissa * factor;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(malformed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
    }

    #[test]
    fn the_forms_pod_manifests_use() {
        assert_eq!(parse_quantity("500m"), Ok(0.5));
        assert_eq!(parse_quantity("1"), Ok(1.0));
        assert_eq!(parse_quantity("0.25"), Ok(0.25));
        assert_eq!(parse_quantity(".5"), Ok(0.5));
        assert_eq!(parse_quantity("512Mi"), Ok(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1Gi"), Ok(1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Ok(1e9));
        assert_eq!(parse_quantity("128974848"), Ok(128974848.0));
        assert_eq!(parse_quantity("129e6"), Ok(129e6));
        assert_eq!(parse_quantity("1E"), Ok(1e18));
        assert_eq!(parse_quantity(" 2 "), Ok(2.0));
    }

    #[test]
    fn refuses_what_kubernetes_refuses() {
        assert_eq!(parse_quantity(""), Err(QuantityError::Empty));
        assert!(matches!(parse_quantity("Mi"), Err(QuantityError::Malformed(_))));
        assert!(matches!(parse_quantity("1.2.3"), Err(QuantityError::Malformed(_))));
        assert!(matches!(parse_quantity("."), Err(QuantityError::Malformed(_))));
        assert!(matches!(parse_quantity("1mb"), Err(QuantityError::UnknownUnit { .. })));
        assert!(matches!(parse_quantity("1 Gi"), Err(QuantityError::UnknownUnit { .. })));
        assert!(matches!(parse_quantity("1e"), Err(QuantityError::UnknownUnit { .. })));
        assert!(matches!(parse_quantity("1KI"), Err(QuantityError::UnknownUnit { .. })));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,12}") {
            let _ = parse_quantity(&s);
        }

        #[test]
        fn integer_with_unit_is_the_product(n in 0u64..10_000_000, idx in 0usize..SUFFIXES.len()) {
            let (unit, factor) = SUFFIXES[idx];
            let got = parse_quantity(&format!("{n}{unit}")).unwrap();
            prop_assert!(close(got, n as f64 * factor), "{n}{unit} -> {got}");
        }

        #[test]
        fn millicores(m in 0u32..1_000_000) {
            let got = parse_quantity(&format!("{m}m")).unwrap();
            prop_assert!(close(got, f64::from(m) / 1000.0));
        }

        #[test]
        fn decimals_and_exponents(whole in 0u32..100_000, frac in 0u32..1000, e in -9i32..10) {
            let text = format!("{whole}.{frac:03}");
            let expect: f64 = text.parse().unwrap();
            prop_assert!(close(parse_quantity(&text).unwrap(), expect));
            let with_exp = format!("{text}e{e}");
            prop_assert!(close(parse_quantity(&with_exp).unwrap(), expect * 10f64.powi(e)));
        }
    }
}
