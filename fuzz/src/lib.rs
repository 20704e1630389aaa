//! The fuzz targets' bodies: each takes the fuzzer's bytes through the same
//! functions the server (or the SDK) runs on what comes from outside, and
//! checks what must hold afterwards. A panic is a finding.
//!
//! `fuzz_targets/*.rs` hand libFuzzer's input to these; `tests/corpus.rs`
//! replays the committed corpora and regression inputs through them on the
//! stable toolchain.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use confab_media::images::{self, ImageError, Rewrite};
use confab_media::sniff::{self, SNIFF_BYTES};
use confab_media::tus_headers;
use confab_proto::message::{encode_checked_body, BodyLimits};
use confab_proto::ordering::{Ordering, Push};
use confab_proto::validate::{
    check_client_msg_id, check_display_name, check_group_title, check_password, check_status_text,
    Username,
};
use confab_proto::{api, ClientFrame, MediaKind, MessageKind, MessageRecord, Seq};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A fuzz target's body: takes the fuzzer's bytes, panics on a finding.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("ws_frame", ws_frame),
    ("http_json", http_json),
    ("media_upload", media_upload),
    ("tus_headers", tus_headers),
    ("ordering", ordering),
];

/// The server's default body limits (`limits.max_text_bytes`,
/// `limits.max_frame_bytes` in `confab-server`'s config).
const BODY_LIMITS: BodyLimits = BodyLimits {
    max_text_bytes: 16 * 1024,
    max_body_bytes: 64 * 1024,
};

/// A WebSocket text frame from a client, as the gateway takes it
/// (`gateway/connection.rs`, `handle`): decoded by `ClientFrame::decode`,
/// and a `send` checked as `chat/send.rs` (`prepare_send`) does. A decoded
/// frame must survive an encode/decode round trip unchanged (the SDK
/// encodes what the server decodes).
pub fn ws_frame(data: &[u8]) {
    // WebSocket text frames are UTF-8 (tungstenite refuses others).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frame = match ClientFrame::decode(text) {
        Ok(frame) => frame,
        Err(e) => {
            assert_eq!(e.error.code, confab_proto::ErrorCode::BadFrame);
            return;
        }
    };
    let again = ClientFrame::decode(&frame.encode()).expect("an encoded frame decodes");
    assert_eq!(again, frame, "round trip of {text:?}");
    if let ClientFrame::Send {
        client_msg_id,
        kind,
        body,
        ..
    } = &frame
    {
        check_send(client_msg_id, *kind, body);
    }
}

/// The checks of a send (either door), and what must hold when it passes.
fn check_send(client_msg_id: &str, kind: MessageKind, body: &serde_json::Value) {
    if check_client_msg_id(client_msg_id).is_err() {
        return;
    }
    if let Ok(json) = encode_checked_body(kind, body, &BODY_LIMITS) {
        assert!(json.len() <= BODY_LIMITS.max_body_bytes);
        assert_ne!(
            kind,
            MessageKind::System,
            "clients may not send system messages"
        );
        let stored: serde_json::Value = serde_json::from_str(&json).expect("stored body parses");
        assert_eq!(&stored, body);
    }
}

/// Parses `body` as `T` the way axum's `Json` does; a parsed value must
/// survive a serialize/parse round trip unchanged.
fn parse_json<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(body).ok()?;
    let text = serde_json::to_string(&value).expect("a parsed body serializes");
    let again: T = serde_json::from_str(&text).expect("a serialized body parses");
    assert_eq!(
        serde_json::to_value(&again).expect("to value"),
        serde_json::to_value(&value).expect("to value"),
        "round trip of {text}"
    );
    Some(value)
}

/// An HTTP JSON request body: the first byte picks the endpoint, the rest
/// is the body, parsed into that endpoint's request type and checked with
/// the validators its handler runs.
pub fn http_json(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 16 {
        0 => {
            if let Some(r) = parse_json::<api::RegisterRequest>(body) {
                if let Ok(u) = Username::parse(&r.username) {
                    let canonical = u.canonical();
                    let again = Username::parse(&canonical).expect("a canonical name is valid");
                    assert_eq!(again.canonical(), canonical);
                }
                let _ = check_password(&r.password);
                if let Some(d) = &r.display_name {
                    let _ = check_display_name(d);
                }
            }
        }
        1 => {
            if let Some(r) = parse_json::<api::LoginRequest>(body) {
                let _ = Username::parse(&r.username);
            }
        }
        2 => {
            let _ = parse_json::<api::RefreshRequest>(body);
        }
        3 => {
            if let Some(r) = parse_json::<api::ChangePasswordRequest>(body) {
                let _ = check_password(&r.new_password);
            }
        }
        4 => {
            if let Some(r) = parse_json::<api::UpdateProfileRequest>(body) {
                if let Some(d) = &r.display_name {
                    let _ = check_display_name(d);
                }
                if let Some(Some(s)) = &r.status_text {
                    let _ = check_status_text(s);
                }
            }
        }
        5 => {
            if let Some(api::CreateConversationRequest::Group { title, .. }) =
                parse_json::<api::CreateConversationRequest>(body)
            {
                let _ = check_group_title(&title);
            }
        }
        6 => {
            if let Some(r) = parse_json::<api::UpdateConversationRequest>(body) {
                if let Some(t) = &r.title {
                    let _ = check_group_title(t);
                }
            }
        }
        7 => {
            let _ = parse_json::<api::AddMembersRequest>(body);
        }
        8 => {
            let _ = parse_json::<api::UpdateMemberRequest>(body);
        }
        9 => {
            let _ = parse_json::<api::FriendRequestCreate>(body);
        }
        10 => {
            if let Some(r) = parse_json::<api::SendMessageRequest>(body) {
                check_send(&r.client_msg_id, r.kind, &r.body);
            }
        }
        11 => {
            let _ = parse_json::<api::ReadRequest>(body);
        }
        12 => {
            if let Some(r) = parse_json::<api::EditMessageRequest>(body) {
                let _ = encode_checked_body(MessageKind::Text, &r.body, &BODY_LIMITS);
            }
        }
        13 => {
            let _ = parse_json::<api::OidcStartRequest>(body);
        }
        14 => {
            let _ = parse_json::<api::OidcExchangeRequest>(body);
        }
        _ => {
            if let Some(r) = parse_json::<api::OidcSignupRequest>(body) {
                let _ = Username::parse(&r.username);
            }
        }
    }
}

/// The pixel limit the fuzzer runs the image code with: the server's
/// default is 50,000,000, which would make every valid large header a
/// second-long decode; the limit logic is the same at any value.
pub const FUZZ_MAX_PIXELS: u64 = 1_000_000;

/// An upload, as `POST /v1/media` and a finished tus upload treat it:
/// sniffed from its first bytes; an image is then checked against the pixel
/// limit from its header, cleaned (metadata cut, orientation applied) and
/// thumbnailed, as `media/mod.rs` does with the file. The decoder limits
/// must hold (libFuzzer's `-rss_limit_mb` catches an allocation beyond
/// them), and what passes must be within the limit.
pub fn media_upload(data: &[u8]) {
    let head = &data[..data.len().min(SNIFF_BYTES)];
    let sniffed = sniff::sniff(head);
    assert!(sniff::agrees(sniffed.mime, &sniffed) || sniffed.kind == MediaKind::File);
    if sniffed.kind != MediaKind::Image {
        return;
    }
    let mut out = Cursor::new(Vec::new());
    match images::clean_into(
        &mut Cursor::new(data),
        sniffed.mime,
        FUZZ_MAX_PIXELS,
        &mut out,
    ) {
        Ok((rewrite, width, height)) => {
            assert!(u64::from(width) * u64::from(height) <= FUZZ_MAX_PIXELS);
            let cleaned = out.into_inner();
            if rewrite == Rewrite::Reencoded {
                assert!(
                    cleaned.starts_with(&[0xFF, 0xD8, 0xFF]),
                    "a jpeg is written"
                );
            }
            if rewrite == Rewrite::Stripped {
                assert!(cleaned.len() <= data.len().max(12), "stripping never grows");
            }
        }
        Err(ImageError::TooLarge { width, height, .. }) => {
            assert!(u64::from(width) * u64::from(height) > FUZZ_MAX_PIXELS);
            return;
        }
        Err(ImageError::Unreadable(_)) => return,
        Err(ImageError::Io(e)) => panic!("io error on memory: {e}"),
    }
    match images::thumbnail_of(&mut Cursor::new(data), sniffed.mime, FUZZ_MAX_PIXELS) {
        Ok(thumb) => assert!(thumb.starts_with(&[0xFF, 0xD8, 0xFF]), "a jpeg thumbnail"),
        Err(ImageError::Io(e)) => panic!("io error on memory: {e}"),
        Err(_) => {}
    }
}

/// tus request headers: the input's lines are `Tus-Resumable`,
/// `Upload-Length`, `Upload-Offset`, `Upload-Metadata`, the `PATCH`
/// `Content-Type` and the upload id of the URL, each through the parser
/// `media/tus.rs` uses, with what the routes rely on checked.
pub fn tus_headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or("");
    let version = next();
    assert_eq!(
        tus_headers::is_supported_version(version),
        version == tus_headers::TUS_VERSION
    );
    for count in [next(), next()] {
        if let Some(n) = tus_headers::parse_byte_count(count) {
            assert_eq!(tus_headers::parse_byte_count(&n.to_string()), Some(n));
        }
    }
    let declared = tus_headers::declared_type(next());
    assert_eq!(declared, sniff::essence(&declared), "an essence is stable");
    assert!(!declared.contains(';'));
    let _ = tus_headers::is_offset_content_type(next());
    let id = next();
    if tus_headers::is_upload_id(id) {
        // The id becomes a file name under the tus directory.
        assert!(!id.is_empty() && id.len() <= tus_headers::MAX_UPLOAD_ID);
        assert!(!id.contains(['/', '\\', '.', '\0']));
    }
}

/// The SDK's reorder/dedup buffer (`confab_proto::ordering`, re-exported
/// by `confab-sdk`) under arbitrary arrivals: the first byte sets the
/// buffer bound, then each pair of bytes is a push or an advance on one of
/// four conversations. Checks exactly-once, in-order, gapless delivery and
/// the bound.
pub fn ordering(data: &[u8]) {
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let max_buffered = usize::from(first % 8) + 1;
    let start = Seq::from(first >> 3);
    let mut o = Ordering::new(HashMap::from([(0, start), (1, -start)]), max_buffered);
    // Per conversation: the model's cursor and every seq delivered.
    let mut cursor: HashMap<i64, Seq> = HashMap::from([(0, start), (1, 0)]);
    let mut delivered: HashMap<i64, HashSet<Seq>> = HashMap::new();
    for op in ops.chunks_exact(2) {
        let conv = i64::from(op[0] & 3);
        let seq = if op[0] & 0x10 != 0 {
            Seq::MAX - Seq::from(op[1] & 3)
        } else {
            Seq::from(op[1] as i8)
        };
        let at = cursor.get(&conv).copied().unwrap_or(0);
        let released = if (op[0] >> 2) & 3 == 3 {
            let ready = o.advance(conv, seq);
            let moved_to = at.max(seq);
            check_run(&ready, conv, moved_to.saturating_add(1));
            ready
        } else {
            let msg = message(conv, seq);
            match o.push(msg) {
                Push::Ready(ready) => {
                    assert_eq!(seq, at.saturating_add(1), "only the next seq is released");
                    check_run(&ready, conv, seq);
                    ready
                }
                Push::Duplicate => {
                    assert!(
                        seq <= at || o.buffered(conv) > 0,
                        "seq {seq} above cursor {at} with nothing buffered is no duplicate"
                    );
                    Vec::new()
                }
                Push::Buffered => {
                    assert!(seq > at.saturating_add(1), "seq {seq} at cursor {at}");
                    Vec::new()
                }
                Push::Overflowed => {
                    assert_eq!(o.buffered(conv), 0, "an overflow drops the buffer");
                    Vec::new()
                }
            }
        };
        let seen = delivered.entry(conv).or_default();
        for m in &released {
            assert!(seen.insert(m.seq), "seq {} delivered twice", m.seq);
        }
        let new_cursor = match (released.last(), (op[0] >> 2) & 3 == 3) {
            (Some(last), _) => last.seq,
            (None, true) => at.max(seq),
            (None, false) => at,
        };
        cursor.insert(conv, new_cursor);
        assert_eq!(o.cursor(conv), new_cursor);
        assert!(o.buffered(conv) <= max_buffered, "the buffer bound holds");
    }
    let gaps = (0..4).any(|c| o.buffered(c) > 0);
    assert_eq!(o.has_gaps(), gaps);
}

/// Checks that `ready` is a gapless run of `conv`'s messages from `from`.
fn check_run(ready: &[MessageRecord], conv: i64, from: Seq) {
    for (i, m) in ready.iter().enumerate() {
        assert_eq!(m.conversation_id, conv);
        let want = i64::try_from(i).ok().and_then(|i| from.checked_add(i));
        assert_eq!(Some(m.seq), want, "run {ready:?} from {from}");
    }
}

fn message(conv: i64, seq: Seq) -> MessageRecord {
    MessageRecord {
        conversation_id: conv,
        seq,
        sender_id: 1,
        client_msg_id: format!("m{conv}-{seq}"),
        kind: MessageKind::Text,
        body: serde_json::json!({ "text": "x" }),
        ts: 0,
        read_by: None,
        edited_at: None,
        deleted: false,
        reactions: Default::default(),
    }
}
