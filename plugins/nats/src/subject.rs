//! Backend channel names to NATS subjects and back.
//!
//! A backend channel is a `.`-separated list of segments; a NATS subject is a `.`-separated
//! list of tokens, so each segment becomes one token under the prefix [`PREFIX`]. Three things
//! a channel may hold cannot stand in a subject as they are, and are escaped:
//!
//! - characters the protocol forbids or reads as something else: ASCII whitespace and other
//!   control characters (they end the subject in the protocol line), `*` and `>` (wildcards);
//! - `%`, the escape character itself, so the mapping stays reversible;
//! - an empty segment (`a..b`, a leading or trailing `.`, the empty channel): NATS refuses
//!   empty tokens.
//!
//! An escaped byte is `%` and two upper-case hex digits (`a b` → `a%20b`, `*` → `%2A`); an
//! empty segment is the token `%` alone, which no escaped segment can be (a literal `%` is
//! always `%25`). Every other character, non-ASCII UTF-8 included, is kept. The mapping is
//! injective, so two backend channels never share a subject, and [`to_channel`] undoes it.
//!
//! The prefix keeps the broker's subjects apart from NATS's own (`$SYS.…`, `$JS.…`,
//! `_INBOX.…`) and from other applications on the same account.

/// The first token of every subject this backend publishes or subscribes to.
pub const PREFIX: &str = "sy";

/// The subject carrying backend channel `channel`.
pub fn to_subject(channel: &str) -> String {
    let mut out = String::with_capacity(PREFIX.len() + 1 + channel.len());
    out.push_str(PREFIX);
    for segment in channel.split('.') {
        out.push('.');
        if segment.is_empty() {
            out.push('%');
            continue;
        }
        for c in segment.chars() {
            if needs_escape(c) {
                // Only ASCII characters are escaped, so one byte each.
                out.push_str(&format!("%{:02X}", c as u32));
            } else {
                out.push(c);
            }
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_ascii_control() || matches!(c, ' ' | '*' | '>' | '%')
}

/// The backend channel that [`to_subject`] turned into `subject`, or `None` for a subject it
/// cannot have produced.
pub fn to_channel(subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let mut segments = Vec::new();
    for token in rest.split('.') {
        if token == "%" {
            segments.push(String::new());
            continue;
        }
        if token.is_empty() {
            return None;
        }
        let mut segment = String::with_capacity(token.len());
        let mut chars = token.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                segment.push(c);
                continue;
            }
            let hex: String = chars.by_ref().take(2).collect();
            let byte = u8::from_str_radix(&hex, 16).ok().filter(|b| b.is_ascii())?;
            let decoded = char::from(byte);
            if hex.len() != 2 || !needs_escape(decoded) {
                return None;
            }
            segment.push(decoded);
        }
        segments.push(segment);
    }
    Some(segments.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_channels_keep_their_segments() {
        assert_eq!(to_subject("chat.room.1"), "sy.chat.room.1");
        assert_eq!(to_subject("#switchyard:inbox:n1"), "sy.#switchyard:inbox:n1");
        assert_eq!(to_subject("héllo"), "sy.héllo");
    }

    #[test]
    fn forbidden_characters_and_empty_segments_are_escaped() {
        assert_eq!(to_subject("a b"), "sy.a%20b");
        assert_eq!(to_subject("a.*.>"), "sy.a.%2A.%3E");
        assert_eq!(to_subject("100%"), "sy.100%25");
        assert_eq!(to_subject("a\tb\r\n"), "sy.a%09b%0D%0A");
        assert_eq!(to_subject("a..b"), "sy.a.%.b");
        assert_eq!(to_subject(".a."), "sy.%.a.%");
        assert_eq!(to_subject(""), "sy.%");
    }

    #[test]
    fn the_mapping_is_reversible() {
        for channel in [
            "",
            ".",
            "..",
            "a",
            "a.b",
            "a..b",
            ".a",
            "a.",
            "a b",
            "*",
            ">",
            "%",
            "%25",
            "a.%.b",
            "x*y>z",
            "tab\there",
            "#switchyard:inbox:n-1",
            "ünï.cödé",
            "\u{7f}",
        ] {
            let subject = to_subject(channel);
            assert!(!subject.contains([' ', '\t', '\r', '\n', '*', '>']), "{subject:?}");
            assert!(!subject.split('.').any(str::is_empty), "empty token in {subject:?}");
            assert_eq!(to_channel(&subject).as_deref(), Some(channel), "{subject:?}");
        }
    }

    /// A hostile client picks the channel name; what it costs on the wire stays bounded:
    /// every byte becomes at most three, plus one per empty segment, so a channel at the
    /// broker's limit (255 bytes) fits NATS's 4,096-byte control line many times over.
    #[test]
    fn the_subject_is_at_most_three_times_the_channel() {
        let worst = [
            "%".repeat(255),
            "*".repeat(255),
            ".".repeat(255),
            "\n".repeat(255),
            "%.".repeat(127),
            "a ".repeat(127),
            "é".repeat(127),
        ];
        for channel in &worst {
            let subject = to_subject(channel);
            assert!(
                subject.len() <= PREFIX.len() + 1 + 3 * channel.len() + 1,
                "{} bytes from {} bytes",
                subject.len(),
                channel.len()
            );
            assert_eq!(to_channel(&subject).as_deref(), Some(channel.as_str()));
        }
    }

    #[test]
    fn subjects_it_cannot_have_made_are_refused() {
        for subject in ["other.a", "sy", "sy.a..b", "sy.%2", "sy.%zz", "sy.%41", "sy.%C3%A9"] {
            assert_eq!(to_channel(subject), None, "{subject:?}");
        }
    }
}
