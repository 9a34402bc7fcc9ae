//! Progress display while an operation runs: a spinner plus one bar per image being pulled
//! (from the operation body's `properties.pullProgress`). Drawn only when stderr is a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use skiff_model::records::PullProgress;

/// The `properties.pullProgress` entries of an operation body (malformed entries skipped).
pub fn pull_progress(op: &Value) -> Vec<PullProgress> {
    op.pointer("/properties/pullProgress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| serde_json::from_value(p.clone()).ok())
        .collect()
}

pub struct Progress {
    multi: Option<MultiProgress>,
    spinner: Option<ProgressBar>,
    bars: HashMap<String, ProgressBar>,
}

impl Progress {
    /// A display that draws only if `enabled` and stderr is a terminal.
    pub fn new(enabled: bool, message: &str) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress { multi: None, spinner: None, bars: HashMap::new() };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let spinner = multi.add(ProgressBar::new_spinner());
        spinner.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        spinner.set_message(message.to_string());
        spinner.enable_steady_tick(Duration::from_millis(100));
        Progress { multi: Some(multi), spinner: Some(spinner), bars: HashMap::new() }
    }

    pub fn is_drawing(&self) -> bool {
        self.multi.is_some()
    }

    /// Update from an operation body.
    pub fn update(&mut self, op: &Value) {
        let Some(multi) = &self.multi else { return };
        for p in pull_progress(op) {
            let bar = self.bars.entry(p.image.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(p.total_bytes.max(1)));
                b.set_style(
                    ProgressStyle::with_template("  {prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b.set_prefix(p.image.clone());
                b
            });
            bar.set_length(p.total_bytes.max(1));
            bar.set_position(p.done_bytes.min(p.total_bytes.max(1)));
            bar.set_message(format!("layers {}/{}", p.layers_done, p.layers_total));
            if p.layers_total > 0 && p.layers_done >= p.layers_total && !bar.is_finished() {
                bar.finish();
            }
        }
    }

    /// Remove everything from the screen.
    pub fn clear(&mut self) {
        for b in self.bars.values() {
            b.finish_and_clear();
        }
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
        if let Some(m) = self.multi.take() {
            let _ = m.clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_pull_progress() {
        let op = json!({"status": "InProgress", "properties": {"pullProgress": [
            {"image": "nginx", "totalBytes": 100, "doneBytes": 40, "layersTotal": 3, "layersDone": 1},
            {"bogus": true}
        ]}});
        let p = pull_progress(&op);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].image.as_str(), p[0].done_bytes, p[0].layers_total), ("nginx", 40, 3));
        assert!(pull_progress(&json!({"status": "Succeeded"})).is_empty());
        // Not a terminal in tests: nothing drawn, updates are no-ops.
        let mut pr = Progress::new(false, "x");
        assert!(!pr.is_drawing());
        pr.update(&op);
    }
}
