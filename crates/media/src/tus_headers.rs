//! Parsing the request headers of the tus 1.0 protocol (`Tus-Resumable`,
//! `Upload-Length`, `Upload-Offset`, `Upload-Metadata`, `Content-Type` of
//! a `PATCH`) and the ids in upload URLs. The routes are in the server's
//! `media/tus.rs`.

use base64::Engine as _;

use crate::sniff::essence;

/// The one protocol version spoken (`Tus-Resumable`, `Tus-Version`).
pub const TUS_VERSION: &str = "1.0.0";

/// The `Content-Type` a `PATCH` must carry.
pub const OFFSET_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// Longest upload id accepted in a URL.
pub const MAX_UPLOAD_ID: usize = 64;

/// Whether a `Tus-Resumable` value (absent: `""`) is the version spoken.
pub fn is_supported_version(tus_resumable: &str) -> bool {
    tus_resumable == TUS_VERSION
}

/// An `Upload-Length` or `Upload-Offset` value: a decimal byte count
/// (surrounding blanks allowed). `None` when it is not one.
pub fn parse_byte_count(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

/// Whether a `PATCH`'s `Content-Type` is [`OFFSET_CONTENT_TYPE`]
/// (parameters and case aside).
pub fn is_offset_content_type(content_type: &str) -> bool {
    essence(content_type) == OFFSET_CONTENT_TYPE
}

/// The declared type in an `Upload-Metadata` value: the first of
/// `filetype`, `content-type` or `mimetype` whose value is base64 of UTF-8,
/// as an [`essence`]; `""` when there is none.
pub fn declared_type(upload_metadata: &str) -> String {
    for pair in upload_metadata.split(',') {
        let mut it = pair.trim().splitn(2, ' ');
        let key = it.next().unwrap_or("").to_ascii_lowercase();
        if !matches!(key.as_str(), "filetype" | "content-type" | "mimetype") {
            continue;
        }
        let value = it.next().unwrap_or("").trim();
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(value) {
            if let Ok(s) = String::from_utf8(bytes) {
                return essence(&s);
            }
        }
    }
    String::new()
}

/// Whether `id` (the last segment of an upload URL) can be one of ours:
/// 1 to [`MAX_UPLOAD_ID`] characters of base64url. Anything else names
/// nothing, and never reaches a file path.
pub fn is_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_UPLOAD_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_byte_count("0"), Some(0));
        assert_eq!(parse_byte_count(" 1024 "), Some(1024));
        assert_eq!(parse_byte_count("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "-1", "1e3", "0x10", "18446744073709551616", "1 2"] {
            assert_eq!(parse_byte_count(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn metadata_types() {
        // "image/PNG; x=1" and "a.png".
        let meta = "filename YS5wbmc=, filetype aW1hZ2UvUE5HOyB4PTE=";
        assert_eq!(declared_type(meta), "image/png");
        assert_eq!(
            declared_type("filetype !!!, mimetype dGV4dC9wbGFpbg=="),
            "text/plain"
        );
        assert_eq!(declared_type("filename YS5wbmc="), "");
        assert_eq!(declared_type(""), "");
        assert_eq!(declared_type("filetype"), "");
    }

    #[test]
    fn versions_ids_and_content_types() {
        assert!(is_supported_version("1.0.0"));
        assert!(!is_supported_version("") && !is_supported_version("0.2.2"));
        assert!(is_upload_id("aZ09-_"));
        assert!(!is_upload_id("") && !is_upload_id("../x") && !is_upload_id(&"a".repeat(65)));
        assert!(is_offset_content_type(
            "Application/Offset+Octet-Stream; x=1"
        ));
        assert!(!is_offset_content_type("application/octet-stream"));
    }
}
