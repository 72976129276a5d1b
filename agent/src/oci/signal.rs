//! Signals as runc and crun accept them on a `kill` command line.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A signal number (Linux, x86_64 and arm64 numbering), 0 to 64.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signal(u8);

const SIGNAL_NAMES: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];
const SIGNAL_ALIASES: [(&str, u8); 4] = [("IOT", 6), ("CLD", 17), ("POLL", 29), ("UNUSED", 31)];
const SIGRTMIN: u8 = 34;
const SIGRTMAX: u8 = 64;

impl Signal {
    pub const TERM: Self = Self(15);
    pub const KILL: Self = Self(9);

    /// The signal with this number, if it is one (0 to 64).
    pub fn from_number(number: u8) -> Option<Self> {
        (number <= SIGRTMAX).then_some(Self(number))
    }

    /// Parses a signal as runc and crun accept it: a number (`15`) or a name with or without
    /// `SIG`, in any case (`TERM`, `SIGKILL`, `kill`), also `RTMIN+n` and `RTMAX-n`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse::<u8>().ok().and_then(Self::from_number);
        }
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(index) = SIGNAL_NAMES
            .iter()
            .position(|known| known.strip_prefix("SIG") == Some(name))
        {
            return u8::try_from(index + 1).ok().map(Self);
        }
        if let Some((_, number)) = SIGNAL_ALIASES.iter().find(|(alias, _)| *alias == name) {
            return Some(Self(*number));
        }
        if let Some(offset) = name.strip_prefix("RTMIN") {
            let offset = realtime_offset(offset, '+')?;
            return Self::from_number(SIGRTMIN.checked_add(offset)?);
        }
        if let Some(offset) = name.strip_prefix("RTMAX") {
            let offset = realtime_offset(offset, '-')?;
            let number = SIGRTMAX.checked_sub(offset)?;
            return (number >= SIGRTMIN).then_some(Self(number));
        }
        None
    }

    pub fn number(self) -> i32 {
        i32::from(self.0)
    }

    /// The conventional name: `SIGTERM`, `SIGRTMIN+3`; `SIG<n>` for numbers without one.
    pub fn name(self) -> Cow<'static, str> {
        let number = self.0;
        match number {
            1..=31 => SIGNAL_NAMES
                .get(usize::from(number) - 1)
                .map_or_else(|| Cow::Owned(format!("SIG{number}")), |n| Cow::Borrowed(*n)),
            SIGRTMIN => Cow::Borrowed("SIGRTMIN"),
            SIGRTMAX => Cow::Borrowed("SIGRTMAX"),
            35..=49 => Cow::Owned(format!("SIGRTMIN+{}", number - SIGRTMIN)),
            50..=63 => Cow::Owned(format!("SIGRTMAX-{}", SIGRTMAX - number)),
            _ => Cow::Owned(format!("SIG{number}")),
        }
    }
}

fn realtime_offset(text: &str, sign: char) -> Option<u8> {
    if text.is_empty() {
        return Some(0);
    }
    let digits = text.strip_prefix(sign)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        for (text, number, name) in [
            ("15", 15, "SIGTERM"),
            ("9", 9, "SIGKILL"),
            ("TERM", 15, "SIGTERM"),
            ("SIGKILL", 9, "SIGKILL"),
            ("KILL", 9, "SIGKILL"),
            ("kill", 9, "SIGKILL"),
            ("sigterm", 15, "SIGTERM"),
            ("HUP", 1, "SIGHUP"),
            ("SIGSYS", 31, "SIGSYS"),
            ("IOT", 6, "SIGABRT"),
            ("SIGCLD", 17, "SIGCHLD"),
            ("2", 2, "SIGINT"),
            ("RTMIN", 34, "SIGRTMIN"),
            ("SIGRTMIN+3", 37, "SIGRTMIN+3"),
            ("RTMAX-2", 62, "SIGRTMAX-2"),
            ("RTMAX", 64, "SIGRTMAX"),
            ("50", 50, "SIGRTMAX-14"),
            ("0", 0, "SIG0"),
            ("32", 32, "SIG32"),
        ] {
            let signal = Signal::parse(text).unwrap_or_else(|| panic!("{text} is a signal"));
            assert_eq!(signal.number(), number, "{text}");
            assert_eq!(signal.name(), name, "{text}");
            assert_eq!(signal.to_string(), name, "{text}");
        }
        for text in [
            "", "65", "-1", "+9", "FOO", "SIG", "RTMIN+31", "RTMAX-31", "RTMIN-1", "RTMIN+", "1.5",
        ] {
            assert_eq!(Signal::parse(text), None, "{text:?}");
        }
    }
}
