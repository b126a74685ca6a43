//! Processes on this machine: whether one still runs.
//!
//! Owns: [`alive`], the one liveness test behind every "left by a dead process" recovery
//! (pending dataset rows, `tmp/` and scratch files named `<pid>-…`). Never: signals or
//! waits for a process.

/// Whether a process with this pid exists on this machine (EPERM: it exists, not ours).
pub fn alive(pid: i64) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    pid > 0
        && pid <= i64::from(libc::pid_t::MAX)
        && (unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_alive_and_impossible_pids_are_not() {
        assert!(super::alive(i64::from(std::process::id())));
        assert!(!super::alive(0));
        assert!(!super::alive(-1));
        assert!(!super::alive(i64::from(u32::MAX) + 7));
    }
}
