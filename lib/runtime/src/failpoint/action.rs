//! A failpoint's action: its text form, and its state once armed.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    Delay(Duration),
    /// Fail this share (0 to 1) of calls with `code`.
    Fail {
        share: f64,
        code: tonic::Code,
    },
    /// Lose the next COUNT responses.
    Lose(u32),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Delay(delay) => write!(f, "delay({})", humantime::format_duration(*delay)),
            Action::Fail { share, code } => write!(f, "fail({share},{code:?})"),
            Action::Lose(count) => write!(f, "lose({count})"),
        }
    }
}

/// `NAME=ACTION`, e.g. `saga.charge=delay(2s)`.
pub fn parse_failpoint(value: &str) -> Result<(String, Action), String> {
    let (name, action) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not NAME=ACTION"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{value:?} names no failpoint"));
    }
    Ok((name.to_owned(), parse_action(action.trim())?))
}

/// The older `GRPC_PATH=COUNT` form of `GRPC_PATH=lose(COUNT)`.
pub fn parse_lose_responses(value: &str) -> Result<(String, Action), String> {
    let (path, count) = value
        .rsplit_once('=')
        .ok_or_else(|| format!("{value:?} is not GRPC_PATH=COUNT"))?;
    let count = count
        .parse()
        .map_err(|_| format!("{count:?} is not a count"))?;
    Ok((path.to_owned(), Action::Lose(count)))
}

fn parse_action(text: &str) -> Result<Action, String> {
    let bad = || format!("{text:?} is not delay(DURATION), fail(SHARE[,CODE]) or lose(COUNT)");
    let (verb, rest) = text.split_once('(').ok_or_else(bad)?;
    let arguments = rest.strip_suffix(')').ok_or_else(bad)?;
    let mut arguments = arguments.split(',').map(str::trim);
    let first = arguments.next().ok_or_else(bad)?;
    let action = match verb.trim() {
        "delay" => {
            Action::Delay(humantime::parse_duration(first).map_err(|e| format!("{text:?}: {e}"))?)
        }
        "fail" => {
            let share: f64 = first.parse().map_err(|_| bad())?;
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{text:?}: the share must be between 0 and 1"));
            }
            let code = match arguments.next() {
                None => tonic::Code::Unavailable,
                Some(name) => code_named(name)
                    .ok_or_else(|| format!("{text:?}: unknown gRPC code {name:?}"))?,
            };
            Action::Fail { share, code }
        }
        "lose" => Action::Lose(first.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    if arguments.next().is_some() {
        return Err(bad());
    }
    Ok(action)
}

fn code_named(name: &str) -> Option<tonic::Code> {
    let name = name.to_ascii_lowercase().replace('-', "_");
    (1..=16)
        .map(tonic::Code::from)
        .find(|code| format!("{code:?}").to_ascii_lowercase() == name.replace('_', ""))
}

/// An action with its running state.
#[derive(Debug)]
pub(super) struct Armed {
    action: Action,
    losses_left: AtomicU32,
}

impl Armed {
    pub(super) fn new(action: Action) -> Self {
        let losses = match action {
            Action::Lose(count) => count,
            _ => 0,
        };
        Self {
            action,
            losses_left: AtomicU32::new(losses),
        }
    }

    pub(super) fn action(&self) -> Action {
        self.action
    }

    /// The code to fail this call with, if it is one of the share that fails.
    pub(super) fn fails(&self) -> Option<tonic::Code> {
        match self.action {
            Action::Fail { share, code } if share > 0.0 && rand::random::<f64>() < share => {
                Some(code)
            }
            _ => None,
        }
    }

    /// Takes one of the responses to lose, if any are left.
    pub(super) fn take_loss(&self) -> bool {
        self.losses_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
