//! Image checks and clean-up: dimensions, metadata (EXIF with its GPS
//! position, XMP, IPTC, comments) removed from what is stored and served,
//! the EXIF orientation applied, and thumbnails.
//!
//! - JPEG: with an orientation other than "as stored", the image is decoded,
//!   turned upright and re-encoded (quality 90); otherwise the metadata
//!   segments (APP1, APP13, COM) are cut out and the pixels stay untouched.
//! - PNG: `eXIf`, `tEXt`, `zTXt`, `iTXt` and `tIME` chunks are cut out.
//! - WebP: `EXIF` and `XMP ` chunks are cut out (and their `VP8X` flags
//!   cleared). The orientation is not applied to WebP.
//! - GIF carries no EXIF.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

/// Longest side of a thumbnail.
pub const THUMBNAIL_MAX: u32 = 320;

/// What [`clean`] made of an image.
#[derive(Debug)]
pub struct Cleaned {
    /// The bytes to store instead of the upload, when anything changed.
    pub replaced: Option<Vec<u8>>,
    /// Width after orientation.
    pub width: u32,
    /// Height after orientation.
    pub height: u32,
}

fn format_of(mime: &str) -> Option<ImageFormat> {
    Some(match mime {
        "image/jpeg" => ImageFormat::Jpeg,
        "image/png" => ImageFormat::Png,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::WebP,
        _ => return None,
    })
}

/// Checks that `data` is a readable image of type `mime` and cleans it.
pub fn clean(data: &[u8], mime: &str) -> Result<Cleaned, String> {
    let format = format_of(mime).ok_or_else(|| format!("{mime} is not an image type"))?;
    let (width, height) = ImageReader::with_format(Cursor::new(data), format)
        .into_dimensions()
        .map_err(|e| format!("unreadable {mime}: {e}"))?;
    match format {
        ImageFormat::Jpeg => {
            let mut decoder = image::codecs::jpeg::JpegDecoder::new(Cursor::new(data))
                .map_err(|e| format!("unreadable jpeg: {e}"))?;
            let orientation = decoder
                .orientation()
                .unwrap_or(image::metadata::Orientation::NoTransforms);
            if orientation == image::metadata::Orientation::NoTransforms {
                let stripped = strip_jpeg(data);
                let replaced = (stripped.len() != data.len()).then_some(stripped);
                return Ok(Cleaned {
                    replaced,
                    width,
                    height,
                });
            }
            let mut img =
                DynamicImage::from_decoder(decoder).map_err(|e| format!("unreadable jpeg: {e}"))?;
            img.apply_orientation(orientation);
            let bytes = encode_jpeg(&img, 90)?;
            Ok(Cleaned {
                replaced: Some(bytes),
                width: img.width(),
                height: img.height(),
            })
        }
        ImageFormat::Png => {
            let stripped = strip_png(data);
            Ok(Cleaned {
                replaced: (stripped.len() != data.len()).then_some(stripped),
                width,
                height,
            })
        }
        ImageFormat::WebP => {
            let stripped = strip_webp(data);
            Ok(Cleaned {
                replaced: (stripped.len() != data.len()).then_some(stripped),
                width,
                height,
            })
        }
        _ => Ok(Cleaned {
            replaced: None,
            width,
            height,
        }),
    }
}

fn encode_jpeg(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let rgb = img.to_rgb8();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&rgb)
        .map_err(|e| format!("jpeg encoding failed: {e}"))?;
    Ok(out)
}

/// A JPEG thumbnail at most [`THUMBNAIL_MAX`] px on its longest side.
pub fn thumbnail(data: &[u8], mime: &str) -> Result<Vec<u8>, String> {
    let format = format_of(mime).ok_or_else(|| format!("{mime} is not an image type"))?;
    let img = image::load_from_memory_with_format(data, format)
        .map_err(|e| format!("unreadable {mime}: {e}"))?;
    let img = if img.width() > THUMBNAIL_MAX || img.height() > THUMBNAIL_MAX {
        img.thumbnail(THUMBNAIL_MAX, THUMBNAIL_MAX)
    } else {
        img
    };
    encode_jpeg(&img, 80)
}

/// A JPEG without APP1 (EXIF, XMP), APP13 (IPTC) and COM segments.
pub fn strip_jpeg(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..2.min(data.len())]);
    let mut at = 2;
    while at + 4 <= data.len() && data[at] == 0xFF {
        let marker = data[at + 1];
        // Start of scan: the rest is entropy-coded data and the trailer.
        if marker == 0xDA {
            break;
        }
        // Markers without a length.
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) || marker == 0xFF {
            out.push(data[at]);
            at += 1;
            continue;
        }
        let len = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        let end = (at + 2 + len).min(data.len());
        if !(marker == 0xE1 || marker == 0xED || marker == 0xFE) {
            out.extend_from_slice(&data[at..end]);
        }
        at = end;
    }
    out.extend_from_slice(&data[at.min(data.len())..]);
    out
}

/// A PNG without metadata chunks.
pub fn strip_png(data: &[u8]) -> Vec<u8> {
    const DROP: [&[u8; 4]; 5] = [b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"];
    if data.len() < 8 {
        return data.to_vec();
    }
    let mut out = data[..8].to_vec();
    let mut at = 8;
    while at + 12 <= data.len() {
        let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let end = (at + 12 + len).min(data.len());
        let kind = &data[at + 4..at + 8];
        if !DROP.iter().any(|d| d.as_slice() == kind) {
            out.extend_from_slice(&data[at..end]);
        }
        at = end;
    }
    out.extend_from_slice(&data[at.min(data.len())..]);
    out
}

/// A WebP without `EXIF` and `XMP ` chunks.
pub fn strip_webp(data: &[u8]) -> Vec<u8> {
    if data.len() < 12 {
        return data.to_vec();
    }
    let mut out = data[..12].to_vec();
    let mut at = 12;
    while at + 8 <= data.len() {
        let kind = &data[at..at + 4];
        let len =
            u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]) as usize;
        let end = (at + 8 + len + (len & 1)).min(data.len());
        if kind == b"VP8X" && at + 8 < data.len() {
            let start = out.len();
            out.extend_from_slice(&data[at..end]);
            // Flags: 0x08 EXIF, 0x04 XMP.
            out[start + 8] &= !(0x08 | 0x04);
        } else if kind != b"EXIF" && kind != b"XMP " {
            out.extend_from_slice(&data[at..end]);
        }
        at = end;
    }
    let riff = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::new_rgb8(w, h);
        encode_jpeg(&img, 80).expect("encode")
    }

    /// Puts an APP1 EXIF segment (with the given orientation) after SOI.
    fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes());
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes());
        tiff.extend_from_slice(b"GPS 52.5200N 13.4050E");
        let mut seg = b"Exif\0\0".to_vec();
        seg.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((seg.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&seg);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn jpeg_exif_is_cut_and_orientation_applied() {
        let plain = jpeg(40, 20);
        let tagged = with_exif(&plain, 1);
        let c = clean(&tagged, "image/jpeg").expect("clean");
        let bytes = c.replaced.expect("changed");
        assert_eq!(bytes, plain);
        assert_eq!((c.width, c.height), (40, 20));

        let rotated = with_exif(&plain, 6);
        let c = clean(&rotated, "image/jpeg").expect("clean");
        assert_eq!((c.width, c.height), (20, 40));
        let bytes = c.replaced.expect("changed");
        assert!(!bytes.windows(4).any(|w| w == b"Exif"));

        assert!(clean(&plain, "image/jpeg")
            .expect("clean")
            .replaced
            .is_none());
        assert!(clean(b"\xFF\xD8\xFFjunk", "image/jpeg").is_err());
    }

    #[test]
    fn thumbnails_are_small() {
        let t = thumbnail(&jpeg(1000, 500), "image/jpeg").expect("thumb");
        let img = image::load_from_memory(&t).expect("decode");
        assert_eq!((img.width(), img.height()), (320, 160));
    }
}
