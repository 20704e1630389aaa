//! OpenID Connect sign-in: linked provider accounts and the single-use
//! secrets of sign-ins in progress.
//!
//! Shared by both backends: compiled once as `sqlite::oidc` and once as
//! `postgres::oidc`; the pool type and the SQL that differs by dialect come
//! from each backend's `dialect` module.

use confab_proto::UserId;

use super::dialect::{self, Conn, Pool, Row};
use crate::types::*;
use crate::{Result, StoreError};

pub(crate) async fn identity_user(db: &Pool, id: &OidcIdentity) -> Result<Option<UserId>> {
    Ok(dialect::query_scalar(
        "SELECT user_id FROM oidc_identities WHERE issuer = $1 AND subject = $2",
    )
    .bind(&id.issuer)
    .bind(&id.subject)
    .fetch_optional(db)
    .await?)
}

pub(crate) async fn identities_of(db: &Pool, user: UserId) -> Result<Vec<OidcIdentity>> {
    let rows = dialect::query(
        "SELECT issuer, subject FROM oidc_identities WHERE user_id = $1
         ORDER BY created_at, issuer, subject",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OidcIdentity {
                issuer: r.try_get("issuer")?,
                subject: r.try_get("subject")?,
            })
        })
        .collect()
}

pub(crate) async fn create_user(
    db: &Pool,
    new: NewUser,
    identity: OidcIdentity,
) -> Result<OidcSignup> {
    let mut tx = dialect::begin_write(db).await?;
    if let Some(owner) = identity_owner(&mut tx, &identity).await? {
        return Ok(OidcSignup::IdentityTaken(owner));
    }
    let user = match super::accounts::insert_user(&mut tx, &new).await {
        Ok(user) => user,
        Err(StoreError::Conflict) => return Ok(OidcSignup::UsernameTaken),
        Err(e) => return Err(e),
    };
    insert_identity(&mut tx, &identity, user.id, new.now).await?;
    tx.commit().await?;
    Ok(OidcSignup::Created(user))
}

pub(crate) async fn link(
    db: &Pool,
    user: UserId,
    identity: OidcIdentity,
    now: Millis,
) -> Result<OidcLink> {
    let mut tx = dialect::begin_write(db).await?;
    let outcome = match identity_owner(&mut tx, &identity).await? {
        Some(owner) if owner == user => OidcLink::AlreadyLinked,
        Some(owner) => OidcLink::TakenBy(owner),
        None => {
            insert_identity(&mut tx, &identity, user, now).await?;
            OidcLink::Linked
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The account a provider identity is linked to, if any.
async fn identity_owner(tx: &mut Conn, identity: &OidcIdentity) -> Result<Option<UserId>> {
    Ok(dialect::query_scalar(
        "SELECT user_id FROM oidc_identities WHERE issuer = $1 AND subject = $2",
    )
    .bind(&identity.issuer)
    .bind(&identity.subject)
    .fetch_optional(&mut *tx)
    .await?)
}

/// Links a provider identity to an account.
async fn insert_identity(
    tx: &mut Conn,
    identity: &OidcIdentity,
    user: UserId,
    now: Millis,
) -> Result<()> {
    dialect::query(
        "INSERT INTO oidc_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&identity.issuer)
    .bind(&identity.subject)
    .bind(user)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn put_pending(
    db: &Pool,
    key_hash: &[u8],
    payload: &str,
    expires_at: Millis,
    now: Millis,
    max_rows: u64,
) -> Result<bool> {
    let mut tx = dialect::begin_write(db).await?;
    dialect::query("DELETE FROM oidc_pending WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let live: i64 = dialect::query_scalar("SELECT COUNT(*) FROM oidc_pending")
        .fetch_one(&mut *tx)
        .await?;
    if u64::try_from(live).unwrap_or(u64::MAX) >= max_rows {
        return Ok(false);
    }
    dialect::query("INSERT INTO oidc_pending (key_hash, payload, expires_at) VALUES ($1, $2, $3)")
        .bind(key_hash)
        .bind(payload)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn take_pending(
    db: &Pool,
    key_hash: &[u8],
    now: Millis,
) -> Result<Option<String>> {
    // One statement: of two racing takes, only one gets the row.
    let row = dialect::query(
        "DELETE FROM oidc_pending WHERE key_hash = $1 RETURNING payload, expires_at",
    )
    .bind(key_hash)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let expires_at: Millis = row.try_get("expires_at")?;
    if expires_at <= now {
        return Ok(None);
    }
    Ok(Some(row.try_get("payload")?))
}
