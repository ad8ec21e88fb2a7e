//! I-JSON (RFC 7493) checks for the `data` clients publish and send.
//!
//! The broker relays `data` as raw bytes without re-encoding it, so whatever it accepts reaches
//! every subscriber's parser. Valid JSON is not enough for that: a value nested 30,000 levels
//! deep overflows recursive parsers, a lone UTF-16 surrogate (`"\ud800"`) is rejected or
//! mangled by strict decoders, a number such as `1e999999` becomes infinity or an error, and
//! duplicate member names are read differently by different parsers. I-JSON rules all of that
//! out, so one check here protects every client.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// The deepest nesting serde_json itself will parse; configured limits stay at or below it.
pub(crate) const MAX_DEPTH_LIMIT: usize = 128;

/// Objects with more members than this switch from a linear duplicate scan to a hash set.
const LINEAR_SCAN_MEMBERS: usize = 16;

/// Checks that `json` (one complete JSON value) is I-JSON with at most `max_depth` levels of
/// arrays and objects; the error says what is wrong and where.
pub(crate) fn check(json: &str, max_depth: usize) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(json);
    Checked { levels_left: max_depth }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("data is not I-JSON (RFC 7493): {e}"))
}

/// Walks one value, refusing what I-JSON forbids; holds the nesting still allowed below it.
#[derive(Clone, Copy)]
struct Checked {
    levels_left: usize,
}

impl Checked {
    fn enter<E: serde::de::Error>(self) -> Result<Checked, E> {
        match self.levels_left.checked_sub(1) {
            Some(levels_left) => Ok(Checked { levels_left }),
            None => Err(E::custom("arrays and objects are nested too deeply")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json already refuses overflow; this keeps the rule if that ever changes.
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number is out of the range of a double"))
        }
    }

    // serde_json has refused lone surrogates and invalid escapes by the time a string gets here.
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut names = Names::default();
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if !names.insert(name) {
                return Err(A::Error::custom("an object has the same member name twice"));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// Member names seen in one object: a short list while the object is small (most are), a set
/// once it is not, so a huge object costs linear time rather than quadratic.
#[derive(Default)]
struct Names<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl<'de> Names<'de> {
    /// False when `name` was already there.
    fn insert(&mut self, name: Cow<'de, str>) -> bool {
        if self.many.is_empty() {
            if self.few.contains(&name) {
                return false;
            }
            self.few.push(name);
            if self.few.len() > LINEAR_SCAN_MEMBERS {
                self.many.extend(self.few.drain(..));
            }
            return true;
        }
        self.many.insert(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_values_pass() {
        for ok in [
            r#"{"text":"hi","n":1,"f":-2.5e3,"ok":true,"none":null,"list":[1,"a",{}]}"#,
            r#""\ud83d\ude00 and \u00e9""#,
            "123456789012345678901234567890",
            "[]",
        ] {
            assert_eq!(check(ok, 64), Ok(()), "{ok}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(check(&deep(64), 64), Ok(()));
        let err = check(&deep(65), 64).expect_err("65 levels");
        assert!(err.contains("nested too deeply"), "{err}");
        let err = check(&deep(30_000), 64).expect_err("30,000 levels");
        assert!(err.contains("nested too deeply"), "{err}");
        let objects = format!("{}1{}", r#"{"a":"#.repeat(3), "}".repeat(3));
        assert_eq!(check(&objects, 3), Ok(()));
        assert!(check(&objects, 2).is_err());
    }

    #[test]
    fn lone_surrogates_are_refused() {
        for bad in [r#""\ud800""#, r#""\udc00""#, r#"{"k":"x\ud800y"}"#, r#"{"\ud800":1}"#] {
            assert!(check(bad, 64).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        for bad in ["1e999999", "-1e400", r#"{"x":[1e309]}"#] {
            assert!(check(bad, 64).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_member_names_are_refused_in_small_and_large_objects() {
        assert!(check(r#"{"a":1,"a":2}"#, 64).is_err());
        assert!(check(r#"{"a":1,"\u0061":2}"#, 64).is_err(), "escaped spelling of the same name");
        let members: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        let big = format!("{{{}}}", members.join(","));
        assert_eq!(check(&big, 64), Ok(()));
        let dup = format!("{{{},\"k7\":0}}", members.join(","));
        assert!(check(&dup, 64).is_err());
    }
}
