//! The seccomp profile compiled once into the BPF program the kernel loads.
//!
//! crun compiles `linux.seccomp` with libseccomp on every `crun run` (measured here: ~4–8 ms
//! of a ~20 ms container start). The daemon compiles the same profile with the same library
//! once at start ([`compile`], in the OCI-to-libseccomp translation crun itself makes), writes
//! the program to a file ([`write_program`]) and bundles hand it to crun pre-compiled
//! (`run.oci.seccomp_bpf_data`). Only crun reads that annotation, so only crun plans get it.

use std::io::Read;
use std::path::Path;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the seccomp profile is malformed")]
    Profile(#[source] serde_json::Error),
    #[error("unknown seccomp {what} '{value}'")]
    Unknown { what: &'static str, value: String },
    #[error("libseccomp refused the profile")]
    Library(#[source] libseccomp::error::SeccompError),
    #[error("exporting the BPF program")]
    Export(#[source] std::io::Error),
}

/// `linux.seccomp` of the OCI runtime spec (the parts a profile may use).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    syscalls: Vec<SyscallRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallRule {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<ArgRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgRule {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// EPERM: what an `SCMP_ACT_ERRNO` without an errno returns (the OCI default).
const EPERM: u32 = 1;

fn action(name: &str, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = i32::try_from(errno.unwrap_or(EPERM)).map_err(|_| SeccompError::Unknown { what: "errno", value: format!("{errno:?}") })?;
    ScmpAction::from_str(name, Some(errno)).map_err(|_| SeccompError::Unknown { what: "action", value: name.to_string() })
}

fn compare(a: &ArgRule) -> Result<ScmpArgCompare, SeccompError> {
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // OCI: `value` is the mask, `valueTwo` the value the masked argument must equal.
        "SCMP_CMP_MASKED_EQ" => return Ok(ScmpArgCompare::new(a.index, ScmpCompareOp::MaskedEqual(a.value), a.value_two)),
        other => return Err(SeccompError::Unknown { what: "comparison", value: other.to_string() }),
    };
    Ok(ScmpArgCompare::new(a.index, op, a.value))
}

/// The BPF program (raw `struct sock_filter` array) of an OCI seccomp profile. Syscall names
/// this libseccomp does not know are skipped, as crun skips them.
pub fn compile(profile: &Value) -> Result<Vec<u8>, SeccompError> {
    let p: Profile = serde_json::from_value(profile.clone()).map_err(SeccompError::Profile)?;
    let mut ctx = ScmpFilterContext::new(action(&p.default_action, p.default_errno_ret)?).map_err(SeccompError::Library)?;
    for arch in &p.architectures {
        let arch: ScmpArch = arch.parse().map_err(|_| SeccompError::Unknown { what: "architecture", value: arch.clone() })?;
        if arch != ScmpArch::native() {
            ctx.add_arch(arch).map_err(SeccompError::Library)?;
        }
    }
    for rule in &p.syscalls {
        let act = action(&rule.action, rule.errno_ret)?;
        let conditions = rule.args.iter().map(compare).collect::<Result<Vec<_>, _>>()?;
        for name in &rule.names {
            let Ok(syscall) = ScmpSyscall::from_name(name) else { continue };
            let added = if conditions.is_empty() { ctx.add_rule(act, syscall) } else { ctx.add_rule_conditional(act, syscall, &conditions) };
            added.map_err(SeccompError::Library)?;
        }
    }
    export(&ctx)
}

/// libseccomp 2.5 exports only to a file descriptor; a program is a few KiB, well below a
/// pipe's buffer, so a pipe holds it whole.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>, SeccompError> {
    let (r, w) = nix::unistd::pipe().map_err(|e| SeccompError::Export(e.into()))?;
    ctx.export_bpf(&w).map_err(SeccompError::Library)?;
    drop(w);
    let mut program = Vec::new();
    std::fs::File::from(r).read_to_end(&mut program).map_err(SeccompError::Export)?;
    Ok(program)
}

/// Compile `profile` and write the program to `path` (atomically, root-only).
pub fn write_program(path: &Path, profile: &Value) -> Result<(), SeccompError> {
    let program = compile(profile)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(SeccompError::Export)?;
    }
    crate::util::write_atomic(path, &program).map_err(SeccompError::Export)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Load `program` in a forked child, run `probe` there and return its exit code.
    fn in_filtered_child(program: &[u8], probe: fn() -> i32) -> i32 {
        #[repr(C)]
        struct SockFprog {
            len: u16,
            filter: *const u8,
        }
        let prog = SockFprog { len: (program.len() / 8) as u16, filter: program.as_ptr() };
        // SAFETY: the child only makes raw syscalls and exits; it touches no lock or
        // allocation the parent's other threads could hold.
        match unsafe { libc::fork() } {
            0 => unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(100);
                }
                if libc::syscall(libc::SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, 0, &prog as *const SockFprog) != 0 {
                    libc::_exit(101);
                }
                libc::_exit(probe());
            },
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WEXITSTATUS(status)
            }
            _ => panic!("fork failed"),
        }
    }

    /// 0 if the syscall failed with `errno`, 1 if it succeeded, 2 for another error.
    fn outcome(ret: libc::c_long, errno: i32) -> i32 {
        match ret {
            r if r >= 0 => 1,
            // SAFETY: reading this thread's errno right after the failed call.
            _ if unsafe { *libc::__errno_location() } == errno => 0,
            _ => 2,
        }
    }

    #[test]
    fn the_default_profile_compiles_and_the_kernel_enforces_it() {
        let program = compile(&crate::bundle::default_seccomp()).unwrap();
        assert!(!program.is_empty() && program.len() % 8 == 0, "a sock_filter array: {} bytes", program.len());
        // SAFETY (all probes): raw syscalls with harmless arguments, in the child only.
        let keyctl = in_filtered_child(&program, || outcome(unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) }, libc::EPERM));
        assert_eq!(keyctl, 0, "keyctl is refused with EPERM");
        let clone3 = in_filtered_child(&program, || outcome(unsafe { libc::syscall(libc::SYS_clone3, 0, 0) }, libc::ENOSYS));
        assert_eq!(clone3, 0, "clone3 reports ENOSYS so libc falls back to clone");
        let unshare_user = in_filtered_child(&program, || outcome(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) }, libc::EPERM));
        assert_eq!(unshare_user, 0, "the masked-equal rule of unshare refuses namespace flags");
        let getpid = in_filtered_child(&program, || outcome(unsafe { libc::syscall(libc::SYS_getpid) }, 0));
        assert_eq!(getpid, 1, "allowed syscalls still work");
    }

    #[test]
    fn bad_profiles_are_clear_errors() {
        let bad_action = serde_json::json!({"defaultAction": "SCMP_ACT_NOPE", "syscalls": []});
        assert!(matches!(compile(&bad_action), Err(SeccompError::Unknown { what: "action", .. })));
        let bad_op = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_WAT"}]}]});
        assert!(matches!(compile(&bad_op), Err(SeccompError::Unknown { what: "comparison", .. })));
        let unknown_name = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"}]});
        assert!(compile(&unknown_name).is_ok(), "unknown names are skipped, as crun does");
    }
}
