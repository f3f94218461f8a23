//! Byte sizes written the way people write them: `512M`, `2G`, `64KiB`, `1048576`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A size in bytes. Parses `N`, `N[K|M|G|T]`, `N[KB|MB|…]` and `N[KiB|MiB|…]`; every unit is a
/// power of 1024 (as in `--memory 512M` everywhere else), case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "String")]
pub struct ByteSize(pub u64);

/// Why a string is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No leading number.
    #[error("size {0:?} does not start with a number (examples: 512M, 2G, 65536)")]
    NoNumber(String),
    /// A unit we do not know.
    #[error("size {input:?} has unknown unit {unit:?} (use K, M, G or T)")]
    BadUnit { input: String, unit: String },
    /// The value does not fit in 64 bits.
    #[error("size {0:?} is too large")]
    Overflow(String),
}

impl ByteSize {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    pub const fn mib(n: u64) -> Self {
        Self(n * Self::MIB)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
    pub const fn as_mib(self) -> u64 {
        self.0 / Self::MIB
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(SizeError::NoNumber(input.to_owned()));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| SizeError::Overflow(input.to_owned()))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            other => {
                return Err(SizeError::BadUnit {
                    input: input.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| SizeError::Overflow(input.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        for (shift, unit) in UNITS {
            if self.0 != 0 && self.0.is_multiple_of(1u64 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl From<ByteSize> for String {
    fn from(s: ByteSize) -> String {
        s.to_string()
    }
}

/// Accepts both `"512M"` and a bare integer number of bytes in config files.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for ByteSize {
    type Error = SizeError;
    fn try_from(r: SizeRepr) -> Result<Self, Self::Error> {
        match r {
            SizeRepr::Bytes(n) => Ok(ByteSize(n)),
            SizeRepr::Text(s) => s.parse(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!("512M".parse::<ByteSize>().unwrap(), ByteSize(512 << 20));
        assert_eq!("2g".parse::<ByteSize>().unwrap(), ByteSize(2 << 30));
        assert_eq!("64KiB".parse::<ByteSize>().unwrap(), ByteSize(64 << 10));
        assert_eq!("4096".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert_eq!(" 1 MB ".parse::<ByteSize>().unwrap(), ByteSize(1 << 20));
    }

    #[test]
    fn rejects_nonsense() {
        assert!(matches!(
            "M".parse::<ByteSize>(),
            Err(SizeError::NoNumber(_))
        ));
        assert!(matches!(
            "12X".parse::<ByteSize>(),
            Err(SizeError::BadUnit { .. })
        ));
        assert!(matches!(
            "-5M".parse::<ByteSize>(),
            Err(SizeError::NoNumber(_))
        ));
        assert!(matches!(
            "99999999999T".parse::<ByteSize>(),
            Err(SizeError::Overflow(_))
        ));
    }

    proptest! {
        /// `N<unit>` in any case, with spaces around, is N times the unit's power of 1024; a
        /// value that does not fit in 64 bits is refused, never wrapped.
        #[test]
        fn units_multiply_or_overflow(
            n in any::<u32>().prop_map(u64::from),
            (unit, shift) in prop::sample::select(vec![
                ("", 0u32), ("b", 0), ("k", 10), ("KiB", 10), ("m", 20), ("MB", 20), ("G", 30),
                ("gib", 30), ("T", 40), ("tB", 40),
            ]),
            big in any::<bool>(),
        ) {
            let n = if big { n << 32 } else { n };
            let parsed = format!(" {n}{unit} ").parse::<ByteSize>();
            match n.checked_mul(1 << shift) {
                Some(v) => prop_assert_eq!(parsed, Ok(ByteSize(v))),
                None => prop_assert!(matches!(parsed, Err(SizeError::Overflow(_)))),
            }
        }

        #[test]
        fn display_round_trips(n in any::<u64>()) {
            let s = ByteSize(n);
            prop_assert_eq!(s.to_string().parse::<ByteSize>().unwrap(), s);
        }
    }
}
