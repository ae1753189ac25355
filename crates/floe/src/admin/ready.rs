//! `/readyz`: whether this node should get another session. Not ready while draining, or when a
//! load is above `max_load` of its limit: TURN allocations (the allocation quota), relay ports
//! (port range × relay IPs), TCP/TLS client connections, open file descriptors (the soft
//! `RLIMIT_NOFILE`), relayed bandwidth (`--ready-max-bps`, when set).

use serde::Serialize;

/// One load against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Check {
    /// Its name in the body (`allocations`, `relay_ports`, `tcp_connections`,
    /// `file_descriptors`, `bandwidth_bps`).
    pub name: &'static str,
    pub used: u64,
    pub limit: u64,
    /// `used / limit`.
    pub load: f64,
}

impl Check {
    /// A check, or none when there is no limit (0).
    pub fn new(name: &'static str, used: u64, limit: u64) -> Option<Check> {
        (limit > 0).then(|| Check {
            name,
            used,
            limit,
            load: used as f64 / limit as f64,
        })
    }
}

/// The `/readyz` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub draining: bool,
    /// The fraction of a limit above which the node is not ready.
    pub max_load: f64,
    /// Why not: `draining` and/or the names of the checks above `max_load`.
    pub reasons: Vec<String>,
    pub checks: Vec<Check>,
}

/// Decides readiness from the checks.
pub fn assess(draining: bool, checks: Vec<Check>, max_load: f64) -> Readiness {
    let mut reasons: Vec<String> = Vec::new();
    if draining {
        reasons.push("draining".into());
    }
    reasons.extend(
        checks
            .iter()
            .filter(|c| c.load > max_load)
            .map(|c| c.name.to_owned()),
    );
    Readiness {
        ready: reasons.is_empty(),
        draining,
        max_load,
        reasons,
        checks,
    }
}

/// Open file descriptors of this process and its soft `RLIMIT_NOFILE` (Linux `/proc`), if
/// readable.
pub fn file_descriptors() -> Option<(u64, u64)> {
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let limit = parse_nofile(&limits)?;
    Some((open, limit))
}

/// The soft limit in the "Max open files" line of `/proc/self/limits`.
fn parse_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use super::*;

    #[test]
    fn ready_below_the_fraction_not_ready_above_it_or_draining() {
        let checks = vec![
            Check::new("allocations", 9, 10).unwrap(),
            Check::new("relay_ports", 91, 100).unwrap(),
        ];
        let r = assess(false, checks.clone(), 0.9);
        assert!(!r.ready);
        assert_eq!(r.reasons, ["relay_ports"]);
        let r = assess(false, checks.clone(), 0.95);
        assert!(r.ready);
        let r = assess(true, checks, 0.95);
        assert_eq!(r.reasons, ["draining"]);
        assert!(
            Check::new("bandwidth_bps", 5, 0).is_none(),
            "no limit, no check"
        );
    }

    #[test]
    fn parses_the_nofile_soft_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile(text), Some(1024));
        assert!(file_descriptors().is_some_and(|(open, limit)| open > 0 && limit > 0));
    }
}
