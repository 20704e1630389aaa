//! Reading a voice note's duration from its container, where it says.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Longest voice note accepted.
pub const MAX_VOICE_MS: u64 = 15 * 60 * 1000;

/// The duration in ms that the container states, if it states one.
pub fn duration_ms(path: &Path, mime: &str) -> std::io::Result<Option<u64>> {
    let mut f = std::fs::File::open(path)?;
    match mime {
        "audio/ogg" => ogg_opus(&mut f),
        "audio/webm" => webm(&mut f),
        "audio/mp4" => mp4(&mut f),
        _ => Ok(None),
    }
}

fn read_at(f: &mut std::fs::File, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    f.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Ogg Opus: the granule position (48 kHz samples) of the last page, less
/// the pre-skip from the `OpusHead` packet.
fn ogg_opus(f: &mut std::fs::File) -> std::io::Result<Option<u64>> {
    let head = read_at(f, 0, 64)?;
    if head.len() < 40 {
        return Ok(None);
    }
    let pre_skip = u16::from_le_bytes([head[38], head[39]]) as u64;
    let size = f.metadata()?.len();
    let from = size.saturating_sub(64 * 1024);
    let tail = read_at(f, from, (size - from) as usize)?;
    let Some(pos) = tail.windows(4).rposition(|w| w == b"OggS") else {
        return Ok(None);
    };
    let Some(g) = tail.get(pos + 6..pos + 14) else {
        return Ok(None);
    };
    let mut granule = [0u8; 8];
    granule.copy_from_slice(g);
    let granule = u64::from_le_bytes(granule);
    if granule == u64::MAX {
        return Ok(None);
    }
    Ok(Some(granule.saturating_sub(pre_skip) / 48))
}

/// WebM: `Duration` (0x4489, a float in `TimecodeScale` units, default
/// 1 ms) in the segment info near the start.
fn webm(f: &mut std::fs::File) -> std::io::Result<Option<u64>> {
    let head = read_at(f, 0, 64 * 1024)?;
    let mut scale_ns = 1_000_000f64;
    if let Some(p) = head.windows(3).position(|w| w == [0x2A, 0xD7, 0xB1]) {
        if let Some(&len_byte) = head.get(p + 3) {
            let len = (len_byte & 0x7F) as usize;
            if len_byte & 0x80 != 0 && (1..=8).contains(&len) {
                if let Some(bytes) = head.get(p + 4..p + 4 + len) {
                    scale_ns = bytes.iter().fold(0u64, |a, &b| (a << 8) | b as u64) as f64;
                }
            }
        }
    }
    let Some(p) = head.windows(2).position(|w| w == [0x44, 0x89]) else {
        return Ok(None);
    };
    let value = match head.get(p + 2) {
        Some(0x84) => head
            .get(p + 3..p + 7)
            .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64),
        Some(0x88) => head.get(p + 3..p + 11).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            f64::from_be_bytes(a)
        }),
        _ => None,
    };
    Ok(value
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v * scale_ns / 1_000_000.0) as u64))
}

/// Most boxes looked at in one file: a real M4A has a handful at the top
/// level and a few dozen in `moov`; a crafted file must not keep the walk
/// busy.
const MAX_BOXES: usize = 4096;

fn malformed(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// MPEG-4: `moov/mvhd` timescale and duration (the `moov` box may sit at
/// either end of the file). Every step moves forward by at least a box
/// header, with checked arithmetic, and the walk gives up after
/// [`MAX_BOXES`]: a crafted size field cannot loop or wrap. A box smaller
/// than its header or reaching past 2^64 makes the file malformed
/// (`InvalidData`).
fn mp4(f: &mut std::fs::File) -> std::io::Result<Option<u64>> {
    let size = f.metadata()?.len();
    let mut at = 0u64;
    for walked in 0.. {
        if walked == MAX_BOXES {
            return Err(malformed("an mp4 file with too many boxes"));
        }
        let Some(header_end) = at.checked_add(8) else {
            break;
        };
        if header_end > size {
            break;
        }
        let h = read_at(f, at, 16)?;
        if h.len() < 8 {
            break;
        }
        let mut len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
        let kind = &h[4..8];
        let mut header = 8u64;
        if len == 1 {
            let Some(large) = h.get(8..16) else {
                break;
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(large);
            len = u64::from_be_bytes(a);
            header = 16;
        } else if len == 0 {
            len = size - at;
        }
        // A box is at least its header.
        let Some(end) = at.checked_add(len) else {
            return Err(malformed("an mp4 box is larger than any file"));
        };
        if len < header {
            return Err(malformed("an mp4 box is smaller than its header"));
        }
        if kind == b"moov" {
            // A truncated `moov` still says what it can.
            let body = read_at(
                f,
                at + header,
                (len - header).min(16 * 1024 * 1024) as usize,
            )?;
            return Ok(mvhd(&body));
        }
        if end > size {
            break;
        }
        at = end;
    }
    Ok(None)
}

fn mvhd(moov: &[u8]) -> Option<u64> {
    let mut at = 0usize;
    for _ in 0..MAX_BOXES {
        let header = moov.get(at..at.checked_add(8)?)?;
        let len = u32::from_be_bytes(header[0..4].try_into().ok()?) as usize;
        if len < 8 {
            return None;
        }
        let end = at.checked_add(len)?;
        if &header[4..8] == b"mvhd" {
            let b = moov.get(at + 8..end.min(moov.len()))?;
            let version = *b.first()?;
            let (timescale, duration) = if version == 1 {
                (
                    u32::from_be_bytes(b.get(20..24)?.try_into().ok()?) as u64,
                    u64::from_be_bytes(b.get(24..32)?.try_into().ok()?),
                )
            } else {
                (
                    u32::from_be_bytes(b.get(12..16)?.try_into().ok()?) as u64,
                    u32::from_be_bytes(b.get(16..20)?.try_into().ok()?) as u64,
                )
            };
            if timescale == 0 {
                return None;
            }
            return Some(duration.saturating_mul(1000) / timescale);
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m4a_duration_from_mvhd() {
        let mut mvhd_box = Vec::new();
        let mut body = vec![0u8; 4]; // version 0, flags
        body.extend_from_slice(&[0; 8]); // creation, modification
        body.extend_from_slice(&1000u32.to_be_bytes()); // timescale
        body.extend_from_slice(&2500u32.to_be_bytes()); // duration
        mvhd_box.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
        mvhd_box.extend_from_slice(b"mvhd");
        mvhd_box.extend_from_slice(&body);
        let mut file = b"\0\0\0\x10ftypM4A \0\0\0\0".to_vec();
        file.extend_from_slice(&((mvhd_box.len() + 8) as u32).to_be_bytes());
        file.extend_from_slice(b"moov");
        file.extend_from_slice(&mvhd_box);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.m4a");
        std::fs::write(&p, &file).expect("write");
        assert_eq!(duration_ms(&p, "audio/mp4").expect("read"), Some(2500));
    }

    /// A box whose 64-bit size wraps the offset back to 0 (the 40-byte
    /// file that once pinned a core): the walk ends.
    #[test]
    fn m4a_with_wrapping_box_size_ends() {
        let mut file = b"\0\0\0\x10ftypM4A \0\0\0\0".to_vec();
        file.extend_from_slice(&1u32.to_be_bytes());
        file.extend_from_slice(b"free");
        file.extend_from_slice(&(u64::MAX - 15).to_be_bytes());
        file.extend_from_slice(&[0; 8]);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.m4a");
        std::fs::write(&p, &file).expect("write");
        let err = duration_ms(&p, "audio/mp4").expect_err("malformed");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn mvhd_walk_never_loops() {
        // Zero-length and overflowing boxes inside moov.
        assert_eq!(mvhd(&[0, 0, 0, 0, b'a', b'b', b'c', b'd']), None);
        assert_eq!(
            mvhd(&[0xFF, 0xFF, 0xFF, 0xFF, b'a', b'b', b'c', b'd']),
            None
        );
    }
}
