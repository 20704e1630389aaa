//! Telling what uploaded bytes are from their first bytes (magic numbers),
//! and whether that agrees with the declared `Content-Type`.

use confab_store::MediaKind;

/// How many leading bytes the sniffer looks at.
pub const SNIFF_BYTES: usize = 64 * 1024;

/// What the bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    /// Content type to record and serve.
    pub mime: &'static str,
    /// Image, voice or file.
    pub kind: MediaKind,
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Types served as downloads under their own name; everything else
/// unknown is `application/octet-stream`. None of these is rendered as a
/// page by a browser (and files are served as attachments with `nosniff`).
const SAFE_FILE_TYPES: &[&str] = &[
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-tar",
    "application/x-7z-compressed",
    "application/x-bzip2",
    "application/x-xz",
    "application/vnd.rar",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "audio/mpeg",
    "audio/x-wav",
    "audio/x-flac",
    "image/bmp",
    "image/tiff",
    "image/heif",
    "image/avif",
];

/// The declared type of an end-to-end encrypted attachment (AES-256-GCM
/// ciphertext): stored as an opaque file, never sniffed or processed.
pub const ENCRYPTED_MIME: &str = "application/x-confab-encrypted";

/// Sniffs `head` (the first up to [`SNIFF_BYTES`] of the upload).
pub fn sniff(head: &[u8]) -> Sniffed {
    let image = |mime| Sniffed {
        mime,
        kind: MediaKind::Image,
    };
    let voice = |mime| Sniffed {
        mime,
        kind: MediaKind::Voice,
    };
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return image("image/jpeg");
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return image("image/png");
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return image("image/gif");
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return image("image/webp");
    }
    // Ogg whose first packet is an Opus header.
    if head.starts_with(b"OggS") && head.len() >= 36 && &head[28..36] == b"OpusHead" {
        return voice("audio/ogg");
    }
    // Matroska/WebM with an Opus track and no video track.
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3])
        && find(head, b"webm")
        && find(head, b"A_OPUS")
        && !find(head, b"V_")
    {
        return voice("audio/webm");
    }
    // MPEG-4 audio (M4A): `ftyp` with an M4A brand.
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let brands = &head[8..size.clamp(12, head.len())];
        if brands.chunks(4).any(|b| b == b"M4A " || b == b"M4B ") {
            return voice("audio/mp4");
        }
    }
    let mime = infer::get(head)
        .map(|t| t.mime_type())
        .and_then(|m| SAFE_FILE_TYPES.iter().copied().find(|s| *s == m))
        .unwrap_or("application/octet-stream");
    Sniffed {
        mime,
        kind: MediaKind::File,
    }
}

/// The declared type without parameters, lower-case.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a declared type claims to be an image or audio (and so must
/// agree with the bytes).
pub fn claims_media(declared: &str) -> bool {
    declared.starts_with("image/") || declared.starts_with("audio/") || declared == "video/webm"
}

/// Whether `declared` (an [`essence`]) names the sniffed type.
pub fn agrees(declared: &str, sniffed: &Sniffed) -> bool {
    let names: &[&str] = match sniffed.mime {
        "image/jpeg" => &["image/jpeg", "image/jpg", "image/pjpeg"],
        "image/png" => &["image/png"],
        "image/gif" => &["image/gif"],
        "image/webp" => &["image/webp"],
        "audio/ogg" => &["audio/ogg", "audio/opus", "application/ogg"],
        "audio/webm" => &["audio/webm", "video/webm"],
        "audio/mp4" => &["audio/mp4", "audio/m4a", "audio/x-m4a", "audio/aac"],
        _ => &[],
    };
    names.contains(&declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest").mime, "image/jpeg");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nxxxx").kind, MediaKind::Image);
        assert_eq!(sniff(b"GIF89a....").mime, "image/gif");
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ").mime, "image/webp");
        let mut ogg = b"OggS".to_vec();
        ogg.resize(28, 0);
        ogg.extend_from_slice(b"OpusHead\x01\x01");
        assert_eq!(sniff(&ogg).kind, MediaKind::Voice);
        let m4a = b"\0\0\0\x18ftypM4A \0\0\0\0M4A isom";
        assert_eq!(sniff(m4a).mime, "audio/mp4");
        assert_eq!(sniff(b"%PDF-1.7\n").mime, "application/pdf");
        let html = sniff(b"<!DOCTYPE html><script>alert(1)</script>");
        assert_eq!(html.mime, "application/octet-stream");
        assert_eq!(html.kind, MediaKind::File);
    }

    #[test]
    fn declared_types() {
        let jpeg = sniff(b"\xFF\xD8\xFF\xE0");
        assert!(agrees(&essence("image/JPEG; q=1"), &jpeg));
        assert!(!agrees("image/png", &jpeg));
        assert!(claims_media("audio/ogg") && !claims_media("application/octet-stream"));
    }
}
