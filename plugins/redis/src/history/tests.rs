use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn wire(offset: u64, epoch: &str, payload: &[u8]) -> Bytes {
    let mut w = format!("\0{offset}:{epoch}\n").into_bytes();
    w.extend_from_slice(payload);
    Bytes::from(w)
}

#[test]
fn keys_share_the_channels_slot() {
    let [meta, stream] = keys("room.42").expect("keys");
    let slot = crate::slot::key_slot(b"room.42");
    assert_eq!(crate::slot::key_slot(&meta), slot);
    assert_eq!(crate::slot::key_slot(&stream), slot);
    assert!(keys("a{b}").is_err());
}

#[test]
fn header_is_split_off() {
    let (position, payload) = split_header(&wire(7, "00ab", b"hello\nworld")).expect("valid");
    assert_eq!(position, Some(Position { offset: 7, epoch: "00ab".into() }));
    assert_eq!(&payload[..], b"hello\nworld");
}

#[test]
fn escaped_plain_payload_round_trips() {
    let original = Bytes::from_static(b"\0binary\n");
    let sent = Bytes::from(plain_wire(&original).expect("needs escaping"));
    assert!(has_header(&sent));
    assert_eq!(split_header(&sent), Ok((None, original)));
    assert_eq!(plain_wire(&Bytes::from_static(b"{\"json\":1}")), None);
}

#[test]
fn malformed_headers_are_errors() {
    for bad in [&b"\0"[..], b"\x0012:ab", b"\0x:ab\n", b"\x0012ab\n", b"\x0012:\n", b"\0\xff:a\n"] {
        assert!(split_header(&Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
    }
    let long = [&[0u8][..], &[b'1'; 200][..], b":e\n"].concat();
    assert!(split_header(&Bytes::from(long)).is_err());
}

proptest! {
    #[test]
    fn any_header_round_trips(offset: u64, epoch in "[0-9a-f]{1,32}", payload: Vec<u8>) {
        let (position, rest) = split_header(&wire(offset, &epoch, &payload)).expect("valid");
        prop_assert_eq!(position, Some(Position { offset, epoch: epoch.as_str().into() }));
        prop_assert_eq!(&rest[..], &payload[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
        let _ = split_header(&Bytes::from(bytes));
    }
}
