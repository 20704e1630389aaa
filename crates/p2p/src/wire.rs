//! The request-response protocols' wire: every request and response is one
//! byte string written whole, then the writer closes its side (so any
//! libp2p implementation can speak them with a plain stream).
//!
//! - `/confab/msg/1`: request = an envelope's JSON; response = [`MsgAck`].
//! - `/confab/sync/1`: request = [`SyncRequest`]; response = [`SyncResponse`].
//! - `/confab/file/1`: request = [`FileRequest`]; response = [`FileChunk`].

use std::collections::BTreeMap;
use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;

/// Envelope delivery.
pub const MSG_PROTOCOL: StreamProtocol = StreamProtocol::new("/confab/msg/1");
/// MLS KeyPackages: request `{}`, answer `{"key_package": base64}` made
/// fresh by the answering peer.
pub const KP_PROTOCOL: StreamProtocol = StreamProtocol::new("/confab/kp/1");
/// Catch-up.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/confab/sync/1");
/// File chunks.
pub const FILE_PROTOCOL: StreamProtocol = StreamProtocol::new("/confab/file/1");

/// Bytes of file data per chunk request.
pub const FILE_CHUNK: u64 = 256 * 1024;

/// The answer to an envelope: stored (possibly a repeat), or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgAck {
    /// True when the envelope is durably stored (now or before).
    pub ok: bool,
    /// False when it was a repeat.
    #[serde(default)]
    pub new: bool,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// A refusal on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// snake_case code (`bad_signature`, `not_member`, …).
    pub code: String,
    /// Human-readable.
    pub message: String,
}

/// "Send me what I lack in this conversation."
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The conversation.
    pub conversation_id: String,
    /// Per sender, the counter up to which the asker has everything.
    pub have: BTreeMap<String, u64>,
}

/// Envelopes above the asker's cursors, in display order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Signed by their original senders.
    pub envelopes: Vec<Envelope>,
    /// More remain: ask again with the new cursors.
    pub has_more: bool,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// "Send me bytes of this file from this offset."
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRequest {
    /// The file's SHA-256 (hex).
    pub sha256: String,
    /// First byte wanted.
    pub offset: u64,
}

/// Up to [`FILE_CHUNK`] bytes from the requested offset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FileChunk {
    /// The file's size.
    pub size: u64,
    /// Base64 bytes.
    pub data: String,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// Reads and writes whole byte strings with a size cap on each side.
#[derive(Debug, Clone)]
pub struct BytesCodec {
    /// Largest request read.
    pub max_request: u64,
    /// Largest response read.
    pub max_response: u64,
}

async fn read_capped<T: AsyncRead + Unpin + Send>(io: &mut T, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    io.take(max + 1).read_to_end(&mut out).await?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message over the limit of {max} bytes"),
        ));
    }
    Ok(out)
}

impl libp2p::request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        // One byte over the cap is kept so the handler can refuse the
        // request as too large with a proper answer instead of a reset.
        let mut out = Vec::new();
        io.take(self.max_request + 1).read_to_end(&mut out).await?;
        Ok(out)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_capped(io, self.max_response).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}
