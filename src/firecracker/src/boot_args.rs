//! The guest kernel command line (`boot_args` of `PUT /boot-source`), built from typed parts.
//!
//! Each argument is a flag (`quiet`) or a `key=value` parameter. Keys are `[A-Za-z0-9_.-]`;
//! values are printable ASCII without spaces or quotes (so no argument can split into two or
//! smuggle in another); a key appears once; the whole line fits Firecracker's x86_64 limit of
//! [`MAX_LEN`] bytes. Firecracker may append arguments of its own (e.g. `root=` for a drive with
//! `is_root_device`), which LuminaGuard does not use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Firecracker's x86_64 command-line buffer is 2048 bytes including the terminating NUL.
pub const MAX_LEN: usize = 2047;

/// Why a kernel argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootArgsError {
    /// A key or flag is empty or has a character outside `[A-Za-z0-9_.-]`.
    #[error("kernel argument name {0:?} is empty or not [A-Za-z0-9_.-]")]
    BadKey(String),
    /// A value is empty or has a space, quote, control or non-ASCII character.
    #[error(
        "kernel argument {key}={value:?}: the value is empty or has a space, quote, control or non-ASCII character"
    )]
    BadValue { key: String, value: String },
    /// The same key twice.
    #[error("kernel argument {0:?} is given twice")]
    Duplicate(String),
    /// The line would not fit Firecracker's buffer.
    #[error("the kernel command line would be {len} bytes, over Firecracker's {MAX_LEN}")]
    TooLong { len: usize },
}

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Flag(String),
    Param { key: String, value: String },
}

impl Arg {
    fn key(&self) -> &str {
        match self {
            Self::Flag(k) | Self::Param { key: k, .. } => k,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Flag(k) => k.len(),
            Self::Param { key, value } => key.len() + 1 + value.len(),
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(k) => f.write_str(k),
            Self::Param { key, value } => write!(f, "{key}={value}"),
        }
    }
}

/// A kernel command line. Built with [`KernelArgs::flag`] and [`KernelArgs::param`]; serialized
/// as the single string Firecracker expects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs {
    args: Vec<Arg>,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'')
}

impl KernelArgs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The command line of a LuminaGuard guest under Firecracker: serial console on `ttyS0`
    /// (Firecracker's stdout), a guest reboot or panic ends the VMM (`reboot=k` goes through
    /// the i8042 Firecracker emulates, as in Firecracker's getting-started guide; `panic=-1`
    /// reboots at once instead of after a second), quiet boot, and the size of the guest's
    /// scratch tmpfs (`luminaguard.scratch_mb`, read by the agent's VM init) and the most
    /// processes the guest's commands may have at once (`luminaguard.pids`: a pids cgroup).
    pub fn luminaguard_guest(scratch_mib: u64, pids: u32) -> Result<Self, BootArgsError> {
        Self::new()
            .param("console", "ttyS0")?
            .param("reboot", "k")?
            .param("panic", "-1")?
            .flag("quiet")?
            .param("luminaguard.scratch_mb", scratch_mib)?
            .param("luminaguard.pids", pids)
    }

    /// Adds a flag, e.g. `quiet`.
    pub fn flag(self, name: &str) -> Result<Self, BootArgsError> {
        if !valid_key(name) {
            return Err(BootArgsError::BadKey(name.to_owned()));
        }
        self.push(Arg::Flag(name.to_owned()))
    }

    /// Adds `key=value`.
    pub fn param(self, key: &str, value: impl fmt::Display) -> Result<Self, BootArgsError> {
        if !valid_key(key) {
            return Err(BootArgsError::BadKey(key.to_owned()));
        }
        let value = value.to_string();
        if !valid_value(&value) {
            return Err(BootArgsError::BadValue {
                key: key.to_owned(),
                value,
            });
        }
        self.push(Arg::Param {
            key: key.to_owned(),
            value,
        })
    }

    fn push(mut self, arg: Arg) -> Result<Self, BootArgsError> {
        if self.args.iter().any(|a| a.key() == arg.key()) {
            return Err(BootArgsError::Duplicate(arg.key().to_owned()));
        }
        let len = self.len() + usize::from(!self.args.is_empty()) + arg.len();
        if len > MAX_LEN {
            return Err(BootArgsError::TooLong { len });
        }
        self.args.push(arg);
        Ok(self)
    }

    /// The value of `key`, if it is a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args.iter().find_map(|a| match a {
            Arg::Param { key: k, value } if k == key => Some(value.as_str()),
            _ => None,
        })
    }

    /// Whether `name` is present (as a flag or a parameter).
    pub fn contains(&self, name: &str) -> bool {
        self.args.iter().any(|a| a.key() == name)
    }

    /// Length of the line in bytes.
    pub fn len(&self) -> usize {
        let sum: usize = self.args.iter().map(Arg::len).sum();
        sum + self.args.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }
}

impl fmt::Display for KernelArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{arg}")?;
        }
        Ok(())
    }
}

impl FromStr for KernelArgs {
    type Err = BootArgsError;

    /// Parses a line this type printed (space-separated flags and `key=value`s, checked as when
    /// built). Quoted values, which this type never produces, are refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_LEN {
            return Err(BootArgsError::TooLong { len: s.len() });
        }
        s.split(' ')
            .filter(|w| !w.is_empty())
            .try_fold(Self::new(), |acc, word| match word.split_once('=') {
                Some((key, value)) => acc.param(key, value),
                None => acc.flag(word),
            })
    }
}

impl Serialize for KernelArgs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KernelArgs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_line_is_exact() {
        let args = KernelArgs::luminaguard_guest(256, 512).unwrap();
        assert_eq!(
            args.to_string(),
            "console=ttyS0 reboot=k panic=-1 quiet luminaguard.scratch_mb=256 luminaguard.pids=512"
        );
        assert_eq!(args.len(), args.to_string().len());
        assert_eq!(args.get("luminaguard.scratch_mb"), Some("256"));
        assert!(args.contains("quiet"));
        assert_eq!(args.get("quiet"), None);
    }

    #[test]
    fn values_that_would_split_or_inject_are_refused() {
        for bad in ["a b", "", "x\"y", "x'y", "tab\there", "nl\n", "é"] {
            assert!(
                matches!(
                    KernelArgs::new().param("init", bad),
                    Err(BootArgsError::BadValue { .. })
                ),
                "{bad:?} accepted"
            );
        }
        for bad in ["", "a b", "a=b", "x\0", "ключ"] {
            assert!(KernelArgs::new().flag(bad).is_err(), "{bad:?} accepted");
            assert!(KernelArgs::new().param(bad, 1).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_key_is_given_once() {
        let err = KernelArgs::new()
            .param("console", "ttyS0")
            .unwrap()
            .param("console", "hvc0")
            .unwrap_err();
        assert_eq!(err, BootArgsError::Duplicate("console".into()));
        assert!(
            KernelArgs::new()
                .flag("quiet")
                .unwrap()
                .param("quiet", 1)
                .is_err()
        );
    }

    #[test]
    fn the_line_fits_firecrackers_buffer() {
        let long = "x".repeat(MAX_LEN - 2);
        let args = KernelArgs::new().param("a", &long).unwrap();
        assert_eq!(args.len(), MAX_LEN);
        assert_eq!(
            args.clone().flag("b"),
            Err(BootArgsError::TooLong { len: MAX_LEN + 2 })
        );
        assert!(KernelArgs::new().param("a", "x".repeat(MAX_LEN)).is_err());
    }

    #[test]
    fn parsing_round_trips_and_checks() {
        let args = KernelArgs::luminaguard_guest(64, 512).unwrap();
        let parsed: KernelArgs = args.to_string().parse().unwrap();
        assert_eq!(parsed, args);
        assert_eq!(serde_json::to_string(&args).unwrap(), format!("\"{args}\""));
        assert_eq!(
            serde_json::from_str::<KernelArgs>(&format!("\"{args}\"")).unwrap(),
            args
        );
        assert!("console=ttyS0 console=hvc0".parse::<KernelArgs>().is_err());
        assert!("init=\"/bin/sh\"".parse::<KernelArgs>().is_err());
        assert!(serde_json::from_str::<KernelArgs>("\"a=\"").is_err());
    }
}
