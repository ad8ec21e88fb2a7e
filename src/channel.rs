//! Channel names: the validated newtype every layer passes around instead of `String`.
//!
//! Syntax (docs/protocol.md): 1 to 255 bytes of `A-Z a-z 0-9 . _ - : @`, segments separated by
//! `.`, no empty segment.

use std::fmt;
use std::sync::Arc;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 255;

/// A channel name that has passed [`ChannelName::parse`]. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a string is not a channel name; the text is what the client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is {0} bytes long; the limit is {MAX_CHANNEL_BYTES}")]
    TooLong(usize),
    #[error("channel name has {0:?} at byte {1}; allowed are A-Z a-z 0-9 and . _ - : @")]
    BadCharacter(char, usize),
    #[error("channel name has an empty segment (leading, trailing or doubled '.')")]
    EmptySegment,
}

/// Whether `b` may appear in a channel name (besides the `.` separator).
pub fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@')
}

impl ChannelName {
    pub fn parse(s: &str) -> Result<ChannelName, ChannelError> {
        validate(s)?;
        Ok(ChannelName(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `.`-separated segments; never empty, none empty.
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.0.split('.')
    }
}

/// Checks `s` against the channel syntax without allocating.
pub fn validate(s: &str) -> Result<(), ChannelError> {
    if s.is_empty() {
        return Err(ChannelError::Empty);
    }
    if s.len() > MAX_CHANNEL_BYTES {
        return Err(ChannelError::TooLong(s.len()));
    }
    let mut previous_dot = true;
    for (i, b) in s.bytes().enumerate() {
        if b == b'.' {
            if previous_dot {
                return Err(ChannelError::EmptySegment);
            }
            previous_dot = true;
        } else if is_name_byte(b) {
            previous_dot = false;
        } else {
            let c = s[i..].chars().next().unwrap_or('?');
            return Err(ChannelError::BadCharacter(c, i));
        }
    }
    if previous_dot {
        return Err(ChannelError::EmptySegment);
    }
    Ok(())
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelName({:?})", &*self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "room.42", "user.alice@example.com", "a-b_c:d", &"x".repeat(255)] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_the_syntax_forbids() {
        assert_eq!(validate(""), Err(ChannelError::Empty));
        assert_eq!(validate(&"x".repeat(256)), Err(ChannelError::TooLong(256)));
        assert_eq!(validate("a..b"), Err(ChannelError::EmptySegment));
        assert_eq!(validate(".a"), Err(ChannelError::EmptySegment));
        assert_eq!(validate("a."), Err(ChannelError::EmptySegment));
        assert_eq!(validate("a b"), Err(ChannelError::BadCharacter(' ', 1)));
        assert_eq!(validate("é"), Err(ChannelError::BadCharacter('é', 0)));
        assert_eq!(validate("a*"), Err(ChannelError::BadCharacter('*', 1)));
    }
}
