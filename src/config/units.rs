//! Whole numbers with a unit, as the TOML file writes them: a number of bytes, milliseconds,
//! seconds or things. Each says what it wants when it gets something else, so `"64k"` is
//! answered "expected a number of bytes, like 65536" instead of serde's "expected u64".

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// What a unit's numbers are called in errors.
pub(super) trait Unit {
    /// Completes "expected …".
    const EXPECTING: &'static str;
}

/// A non-negative whole number of `U`.
pub(super) struct Amount<U> {
    value: u64,
    unit: PhantomData<U>,
}

impl<U> Amount<U> {
    pub(super) fn get(&self) -> u64 {
        self.value
    }
}

// Derives would require `U: Debug` and so on; the unit is only a marker.
impl<U> fmt::Debug for Amount<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

macro_rules! unit {
    ($name:ident, $alias:ident, $expecting:literal) => {
        #[derive(Debug)]
        pub(super) enum $name {}
        impl Unit for $name {
            const EXPECTING: &'static str = $expecting;
        }
        pub(super) type $alias = Amount<$name>;
    };
}

unit!(ByteUnit, Bytes, "a number of bytes without quotes or units, like 65536");
unit!(MilliUnit, Millis, "a number of milliseconds without quotes or units, like 5000");
unit!(SecondUnit, Seconds, "a number of seconds without quotes or units, like 300");
unit!(CountUnit, Count, "a whole number without quotes, like 1000");

impl<'de, U: Unit> Deserialize<'de> for Amount<U> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor<U>(PhantomData<U>);

        impl<U: Unit> Visitor<'_> for AmountVisitor<U> {
            type Value = Amount<U>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(U::EXPECTING)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Amount<U>, E> {
                Ok(Amount { value, unit: PhantomData })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount<U>, E> {
                u64::try_from(v)
                    .map(|value| Amount { value, unit: PhantomData })
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
        }

        deserializer.deserialize_u64(AmountVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct T {
        size: Bytes,
        #[serde(default)]
        #[allow(dead_code)] // only read for its errors
        wait: Option<Millis>,
    }

    fn parse(text: &str) -> Result<T, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| e.message().to_string())
    }

    #[test]
    fn numbers_are_read_and_everything_else_says_what_is_wanted() {
        assert_eq!(parse("size = 65536").map(|t| t.size.get()), Ok(65536));
        assert_eq!(
            parse("size = \"64k\"").map(|_| ()),
            Err("invalid type: string \"64k\", expected a number of bytes without quotes or \
                 units, like 65536"
                .into())
        );
        let e = parse("size = -1").err().unwrap_or_default();
        assert!(e.contains("integer `-1`") && e.contains("a number of bytes"), "{e}");
        let e = parse("size = 1\nwait = 2.5").err().unwrap_or_default();
        assert!(e.contains("expected a number of milliseconds"), "{e}");
    }
}
