//! What a media message (`image`, `voice`, `file`) must satisfy: it names
//! an upload of the sender's that fits its kind, and what its body says
//! about that upload (size, type, dimensions) is what the server knows.

use confab_proto::{ApiError, ErrorCode, MessageKind};
use confab_store::{MediaKind, NewMessage, Store};

/// Checks that an `image`, `voice` or `file` message references media that
/// exists, was uploaded by the sender, and fits the kind (`image` needs an
/// image, `voice` a voice note; a `file` may be anything).
pub async fn check_message_media(store: &dyn Store, msg: &NewMessage) -> Result<(), ApiError> {
    let wanted = match msg.kind {
        MessageKind::Image => Some(MediaKind::Image),
        MessageKind::Voice => Some(MediaKind::Voice),
        MessageKind::File => None,
        // An encrypted message may point at its (encrypted) attachment.
        MessageKind::Encrypted => None,
        _ => return Ok(()),
    };
    let body: serde_json::Value = serde_json::from_str(&msg.body)
        .map_err(|_| ApiError::new(ErrorCode::BadRequest, "unreadable body"))?;
    if msg.kind == MessageKind::Encrypted && body.get("media_id").is_none() {
        return Ok(());
    }
    let id = body
        .get("media_id")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "media messages need a media_id"))?;
    let record = store
        .media(id)
        .await
        .map_err(crate::error::store_error)?
        .filter(|r| r.owner_id == msg.sender_id)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                "no such media among your uploads: upload it first (POST /v1/media)",
            )
        })?;
    if let Some(kind) = wanted {
        if record.kind != kind {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "a {} message needs {} media; {id} is {} ({})",
                    msg.kind.as_str(),
                    kind.as_str(),
                    record.kind.as_str(),
                    record.mime
                ),
            ));
        }
    }
    // Receivers show these numbers before fetching anything, so what the
    // body says about the media must be what the server knows of it.
    let facts: Vec<(&str, serde_json::Value)> = match msg.kind {
        MessageKind::File => vec![
            ("size", record.size.into()),
            ("mime", record.mime.as_str().into()),
        ],
        MessageKind::Image => [("width", record.width), ("height", record.height)]
            .into_iter()
            .filter_map(|(field, v)| v.map(|v| (field, v.into())))
            .collect(),
        _ => Vec::new(),
    };
    for (field, known) in facts {
        if body.get(field).is_some_and(|said| *said != known) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("\"{field}\" must be the upload's: {known} for {id}"),
            ));
        }
    }
    Ok(())
}
