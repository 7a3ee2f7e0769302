//! Fault injection: the grammar `<endpoint>=<action>[x<count>]` and the bookkeeping that decides
//! which request a fault hits.
//!
//! Tests and benchmarks need the remote side to fail on purpose (reject a license, answer 500
//! three times, hang past a timeout, cut the connection, lie about a checksum) so that retry,
//! classification and "no usage lost" can be shown. Parsing and the "does this request fire a
//! fault?" decision live here as pure code; the server applies the chosen action.
//!
//! Architecture invariant: this module does no I/O.

use super::SimError;
use std::fmt;
use std::time::Duration;

/// An endpoint of the simulator that a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /jes/api/v1/register`.
    Register,
    /// `GET /jes/api/v1/entitlements`.
    Entitlements,
    /// `POST /jcs/api/v1/usage`.
    Usage,
    /// `GET /access/api/v1/tokens/me`.
    Token,
    /// `PUT /artifactory/{repo}/{path}`.
    Deploy,
    /// `GET /artifactory/api/storage/{repo}/{path}`.
    Storage,
    /// Every endpoint above (only in a fault spec; requests are never classified as `Any`).
    Any,
}

impl Endpoint {
    /// The name used in fault specs and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Register => "register",
            Endpoint::Entitlements => "entitlements",
            Endpoint::Usage => "usage",
            Endpoint::Token => "token",
            Endpoint::Deploy => "deploy",
            Endpoint::Storage => "storage",
            Endpoint::Any => "any",
        }
    }

    fn parse(name: &str) -> Option<Endpoint> {
        Some(match name {
            "register" => Endpoint::Register,
            "entitlements" => Endpoint::Entitlements,
            "usage" => Endpoint::Usage,
            "token" => Endpoint::Token,
            "deploy" => Endpoint::Deploy,
            "storage" => Endpoint::Storage,
            "any" => Endpoint::Any,
            _ => return None,
        })
    }

    /// True when a fault aimed at `self` hits a request to `request`.
    fn covers(self, request: Endpoint) -> bool {
        self == Endpoint::Any || self == request
    }
}

/// What a fault does to the request it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this HTTP status (400..=599) with a JSON error body.
    Status(u16),
    /// Close the connection with no HTTP answer at all (TCP reset).
    Reset,
    /// Sleep this long, then answer normally.
    Delay(Duration),
    /// Answer normally but with a wrong SHA-256 (storage info and deploy only).
    Mismatch,
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAction::Status(code) => write!(f, "{code}"),
            FaultAction::Reset => f.write_str("reset"),
            FaultAction::Delay(d) => write!(f, "delay:{}ms", d.as_millis()),
            FaultAction::Mismatch => f.write_str("mismatch"),
        }
    }
}

/// One injected fault: where, what, and how many more times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which endpoint it hits.
    pub endpoint: Endpoint,
    /// What it does.
    pub action: FaultAction,
    /// How many more requests it hits; `None` is forever.
    pub remaining: Option<u32>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.endpoint.as_str(), self.action)?;
        if let Some(n) = self.remaining {
            write!(f, "x{n}")?;
        }
        Ok(())
    }
}

/// Longest delay a fault may ask for; longer is surely a typo.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Parses a fault spec such as `entitlements=500x3`, `usage=reset`, `token=delay:1500ms`,
/// `storage=mismatchx1`.
pub fn parse_fault(spec: &str) -> Result<Fault, SimError> {
    let bad = |reason: String| SimError::BadFault {
        spec: spec.chars().take(100).collect(),
        reason,
    };
    let trimmed = spec.trim();
    let Some((name, rest)) = trimmed.split_once('=') else {
        return Err(bad(
            "it has no '='; write <endpoint>=<action>[x<count>], e.g. usage=500x3".into(),
        ));
    };
    let endpoint = Endpoint::parse(name.trim()).ok_or_else(|| {
        bad(format!(
            "unknown endpoint {:?}; use one of register, entitlements, usage, token, deploy, storage, any",
            name.trim()
        ))
    })?;
    let rest = rest.trim();
    let (action_text, remaining) = match rest.rsplit_once('x') {
        Some((action, count)) if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = count
                .parse()
                .map_err(|_| bad(format!("the count {count} is too large")))?;
            if n == 0 {
                return Err(bad("the count must be at least 1 (x1, x2, ...)".into()));
            }
            (action, Some(n))
        }
        _ => (rest, None),
    };
    let action = parse_action(action_text).map_err(bad)?;
    if action == FaultAction::Mismatch && !matches!(endpoint, Endpoint::Storage | Endpoint::Deploy)
    {
        return Err(bad(
            "the mismatch action only applies to the storage and deploy endpoints".into(),
        ));
    }
    Ok(Fault {
        endpoint,
        action,
        remaining,
    })
}

fn parse_action(text: &str) -> Result<FaultAction, String> {
    match text {
        "" => Err("the action is missing; use an HTTP status, reset, delay:<n>ms, delay:<n>s or mismatch".into()),
        "reset" => Ok(FaultAction::Reset),
        "mismatch" => Ok(FaultAction::Mismatch),
        _ if text.starts_with("delay:") => parse_delay(&text["delay:".len()..]).map(FaultAction::Delay),
        _ if text.bytes().all(|b| b.is_ascii_digit()) => match text.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => Ok(FaultAction::Status(code)),
            _ => Err(format!("the status {text} is not an HTTP error status (400 to 599)")),
        },
        _ => Err(format!(
            "unknown action {text:?}; use an HTTP status (e.g. 500), reset, delay:<n>ms, delay:<n>s or mismatch"
        )),
    }
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    let (digits, unit_ms) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1u64)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1000u64)
    } else {
        return Err(format!(
            "the delay {text:?} has no unit; write e.g. delay:250ms or delay:3s"
        ));
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the delay {text:?} is not a whole number of ms or s"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("the delay {text:?} is too large"))?;
    let d = Duration::from_millis(n.saturating_mul(unit_ms));
    if d > MAX_DELAY {
        return Err(format!("the delay {text:?} is longer than one hour"));
    }
    Ok(d)
}

/// The active faults, in the order given; the first one that covers a request fires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FaultSet {
    faults: Vec<Fault>,
}

impl FaultSet {
    /// A set holding `faults`.
    pub fn new(faults: Vec<Fault>) -> Self {
        FaultSet { faults }
    }

    /// Decides whether a request to `endpoint` fires a fault; if so, uses up one of its counts
    /// (dropping it when spent) and returns its action.
    pub(crate) fn fire(&mut self, endpoint: Endpoint) -> Option<FaultAction> {
        let idx = self.faults.iter().position(|f| {
            f.endpoint.covers(endpoint)
                && (f.action != FaultAction::Mismatch
                    || matches!(endpoint, Endpoint::Storage | Endpoint::Deploy))
        })?;
        let fault = &mut self.faults[idx];
        let action = fault.action;
        if let Some(n) = fault.remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.faults.remove(idx);
            }
        }
        Some(action)
    }

    /// The faults still active, as specs (`usage=500x2`).
    pub fn specs(&self) -> Vec<String> {
        self.faults.iter().map(|f| f.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Fault {
        parse_fault(s).unwrap()
    }

    #[test]
    fn status_with_count_parses() {
        let f = p("entitlements=500x3");
        assert_eq!(f.endpoint, Endpoint::Entitlements);
        assert_eq!(f.action, FaultAction::Status(500));
        assert_eq!(f.remaining, Some(3));
        assert_eq!(f.to_string(), "entitlements=500x3");
    }

    #[test]
    fn every_action_parses() {
        assert_eq!(p("usage=reset").action, FaultAction::Reset);
        assert_eq!(p("usage=resetx2").remaining, Some(2));
        assert_eq!(
            p("token=delay:1500ms").action,
            FaultAction::Delay(Duration::from_millis(1500))
        );
        assert_eq!(
            p("any=delay:2sx1").action,
            FaultAction::Delay(Duration::from_secs(2))
        );
        assert_eq!(p("storage=mismatch").action, FaultAction::Mismatch);
        assert_eq!(p("deploy=507").action, FaultAction::Status(507));
        assert_eq!(p("register=400").remaining, None);
    }

    #[test]
    fn bad_specs_get_a_sentence_naming_the_problem() {
        let cases = [
            ("usage", "no '='"),
            ("nowhere=500", "unknown endpoint"),
            ("usage=", "action is missing"),
            ("usage=200", "not an HTTP error status"),
            ("usage=99999", "not an HTTP error status"),
            ("usage=explode", "unknown action"),
            ("usage=delay:5", "no unit"),
            ("usage=delay:xms", "not a whole number"),
            ("usage=delay:2h", "no unit"),
            ("usage=delay:99999s", "longer than one hour"),
            ("usage=500x0", "at least 1"),
            ("usage=500x99999999999", "too large"),
            ("usage=mismatch", "only applies"),
        ];
        for (spec, want) in cases {
            let err = parse_fault(spec).unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
            assert!(err.contains(spec), "{spec}: {err}");
        }
    }

    #[test]
    fn counted_fault_fires_that_many_times_then_stops() {
        let mut set = FaultSet::new(vec![p("usage=500x2")]);
        assert_eq!(set.fire(Endpoint::Register), None);
        assert_eq!(set.fire(Endpoint::Usage), Some(FaultAction::Status(500)));
        assert_eq!(set.specs(), vec!["usage=500x1"]);
        assert_eq!(set.fire(Endpoint::Usage), Some(FaultAction::Status(500)));
        assert_eq!(set.fire(Endpoint::Usage), None);
        assert!(set.specs().is_empty());
    }

    #[test]
    fn first_matching_fault_wins_and_any_covers_everything() {
        let mut set = FaultSet::new(vec![p("register=400x1"), p("any=503")]);
        assert_eq!(set.fire(Endpoint::Register), Some(FaultAction::Status(400)));
        assert_eq!(set.fire(Endpoint::Register), Some(FaultAction::Status(503)));
        assert_eq!(set.fire(Endpoint::Storage), Some(FaultAction::Status(503)));
    }

    #[test]
    fn uncounted_fault_fires_forever() {
        let mut set = FaultSet::new(vec![p("token=401")]);
        for _ in 0..100 {
            assert_eq!(set.fire(Endpoint::Token), Some(FaultAction::Status(401)));
        }
    }
}
