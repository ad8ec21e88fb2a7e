//! The message `send` puts on another node's inbox channel: which connection, and the frame.
//!
//! Binary, versioned by its first byte, so a node can refuse what it does not understand
//! (a newer node's message, or bytes someone else put on the channel) instead of guessing:
//!
//! ```text
//! 0x01 | connection key (8 bytes, big-endian) | the `direct` frame's JSON text
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use super::ConnKey;

/// The first byte of a version-1 inbox message.
const VERSION_1: u8 = 1;
const HEADER: usize = 1 + 8;

/// A `direct` frame for connection `to` on the receiving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InboxMessage {
    pub(crate) to: ConnKey,
    /// The frame's JSON text (not yet WebSocket-framed).
    pub(crate) frame: Bytes,
}

/// Why an inbox message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InboxError {
    #[error("inbox message of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("inbox message of unknown version {0}")]
    Version(u8),
}

impl InboxMessage {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER + self.frame.len());
        out.put_u8(VERSION_1);
        out.put_u64(self.to);
        out.put_slice(&self.frame);
        out.freeze()
    }

    pub(crate) fn decode(payload: &Bytes) -> Result<InboxMessage, InboxError> {
        let Some((&version, rest)) = payload.split_first() else {
            return Err(InboxError::Short(0));
        };
        if version != VERSION_1 {
            return Err(InboxError::Version(version));
        }
        let Some((key, _)) = rest.split_first_chunk::<8>() else {
            return Err(InboxError::Short(payload.len()));
        };
        Ok(InboxMessage { to: u64::from_be_bytes(*key), frame: payload.slice(HEADER..) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_round_trip() {
        let m =
            InboxMessage { to: 0x0123_4567_89ab_cdef, frame: Bytes::from_static(b"{\"op\":1}") };
        assert_eq!(InboxMessage::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn the_old_text_form_and_short_messages_are_refused() {
        let old = Bytes::from_static(b"12345\n{\"op\":\"direct\"}");
        assert_eq!(InboxMessage::decode(&old), Err(InboxError::Version(b'1')));
        assert_eq!(InboxMessage::decode(&Bytes::new()), Err(InboxError::Short(0)));
        assert_eq!(
            InboxMessage::decode(&Bytes::from_static(&[1, 2, 3])),
            Err(InboxError::Short(3))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = InboxMessage::decode(&Bytes::from(bytes));
        }
    }
}
