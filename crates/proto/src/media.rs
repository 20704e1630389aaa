//! Media uploads: what `POST /v1/media` answers, and the kinds of media.

use serde::{Deserialize, Serialize};

/// The answer to an upload: the id to put in an `image`, `voice` or `file`
/// message body, and what the server made of the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadedMedia {
    /// Random, url-safe id (`GET /v1/media/{media_id}`).
    pub media_id: String,
    /// Size in bytes of what is stored and served.
    pub size: u64,
    /// Content type sniffed from the bytes (`application/octet-stream` for
    /// unknown binaries).
    pub mime: String,
    /// Lower-case hex SHA-256 of what is stored and served (also its
    /// `ETag`). For a JPEG, PNG or WebP with metadata this is the hash of
    /// the cleaned image, not of the uploaded bytes.
    pub sha256: String,
    /// `image`, `voice` or `file`: which message kind may carry it.
    pub kind: String,
    /// Pixels, for images (after applying the EXIF orientation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Pixels, for images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Length, for voice notes whose container tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// What an uploaded media item is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// JPEG, PNG, GIF or WebP.
    Image,
    /// Ogg/Opus, WebM/Opus, M4A/AAC.
    Voice,
    /// Anything else.
    File,
}

impl MediaKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Voice => "voice",
            MediaKind::File => "file",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<MediaKind> {
        Some(match s {
            "image" => MediaKind::Image,
            "voice" => MediaKind::Voice,
            "file" => MediaKind::File,
            _ => return None,
        })
    }
}
