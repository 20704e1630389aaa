//! Who counts as a member: reads and uses of a conversation need current
//! membership; a former member is told so (`forbidden`), anyone else hears
//! of no such conversation (`not_found`).

use confab_proto::{ApiError, ConversationId, ErrorCode, UserId};
use confab_store::Store;

use crate::error::store_error;
use crate::refusal::{FORMER_MEMBER, NOT_A_MEMBER};

/// The error for a user who is not a member of `id` now.
pub async fn not_a_member(store: &dyn Store, id: ConversationId, user: UserId) -> ApiError {
    match store.was_member(id, user).await {
        Ok(true) => ApiError::new(ErrorCode::Forbidden, FORMER_MEMBER),
        Ok(false) => ApiError::new(ErrorCode::NotFound, NOT_A_MEMBER),
        Err(e) => store_error(e),
    }
}

/// Answers `forbidden` to former members and `not_found` to strangers.
pub async fn require_member(
    store: &dyn Store,
    id: ConversationId,
    user: UserId,
) -> Result<(), ApiError> {
    if store.member(id, user).await.map_err(store_error)?.is_some() {
        return Ok(());
    }
    Err(not_a_member(store, id, user).await)
}
