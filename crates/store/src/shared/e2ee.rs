//! The MLS delivery service's rows: encrypted conversations, device keys
//! and KeyPackages (the epoch rule itself is in the write path,
//! `write_plan::apply_epochs`). On PostgreSQL a claim locks the package row
//! it takes (`FOR UPDATE SKIP LOCKED`), so concurrent claims on any node
//! never share one; SQLite's single writer serialises claims anyway.
//!
//! Shared by both backends: compiled once as `sqlite::e2ee` and once as
//! `postgres::e2ee`; the pool type and the SQL that differs by dialect come
//! from each backend's `dialect` module. `last_resort` is a BOOLEAN on
//! PostgreSQL and a 0/1 INTEGER on SQLite; the SQL here reads the same on
//! both (`NOT last_resort`, `TRUE`, `EXISTS`).

use confab_proto::e2ee::{DeviceInfo, KeyPackageStock};
use confab_proto::{ConversationId, DeviceId, UserId};

use super::dialect::{self, Pool, Row};

use crate::types::Millis;
use crate::Result;

pub(crate) async fn conversation_encrypted(db: &Pool, id: ConversationId) -> Result<Option<bool>> {
    Ok(
        dialect::query_scalar("SELECT encrypted FROM conversations WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub(crate) async fn pin_device_key(
    db: &Pool,
    device: DeviceId,
    key: &str,
) -> Result<Option<String>> {
    let mut tx = dialect::begin_write(db).await?;
    dialect::query(
        "UPDATE devices SET public_key = $1 WHERE id = $2 AND public_key IS NULL AND revoked_at IS NULL",
    )
    .bind(key)
    .bind(device)
    .execute(&mut *tx)
    .await?;
    let now: Option<Option<String>> = dialect::query_scalar(
        "SELECT public_key FROM devices WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(device)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(now.flatten())
}

pub(crate) async fn member_devices(
    db: &Pool,
    id: ConversationId,
    devices: &[DeviceId],
) -> Result<Vec<DeviceId>> {
    Ok(dialect::query_scalar(&format!(
        "SELECT d.id FROM devices d JOIN members m ON m.user_id = d.user_id
         WHERE m.conversation_id = $1 AND d.revoked_at IS NULL AND {}",
        dialect::in_ids("d.id", "$2")
    ))
    .bind(id)
    .bind(dialect::id_list(devices)?)
    .fetch_all(db)
    .await?)
}

pub(crate) async fn live_devices(db: &Pool, user: UserId) -> Result<Vec<DeviceInfo>> {
    let rows = dialect::query(
        "SELECT id, public_key, created_at FROM devices WHERE user_id = $1 AND revoked_at IS NULL
         ORDER BY id",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeviceInfo {
                device_id: r.try_get(0)?,
                public_key: r.try_get(1)?,
                created_at: r.try_get(2)?,
            })
        })
        .collect()
}

async fn stock_in(db: impl dialect::Executor<'_>, device: DeviceId) -> Result<KeyPackageStock> {
    let row = dialect::query(
        "SELECT (SELECT COUNT(*) FROM key_packages WHERE device_id = $1 AND NOT last_resort),
                EXISTS (SELECT 1 FROM key_packages WHERE device_id = $1 AND last_resort)",
    )
    .bind(device)
    .fetch_one(db)
    .await?;
    Ok(KeyPackageStock {
        stock: row.try_get(0)?,
        last_resort: row.try_get(1)?,
    })
}

pub(crate) async fn key_package_stock(db: &Pool, device: DeviceId) -> Result<KeyPackageStock> {
    stock_in(db, device).await
}

pub(crate) async fn add_key_packages(
    db: &Pool,
    device: DeviceId,
    packages: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
    max_stock: i64,
    now: Millis,
) -> Result<Option<KeyPackageStock>> {
    let mut tx = dialect::begin_write(db).await?;
    // Uploads of one device wait for each other (the stock check).
    dialect::lock_row(&mut tx, "devices", device).await?;
    let before = stock_in(&mut *tx, device).await?;
    if before.stock + packages.len() as i64 > max_stock {
        return Ok(None);
    }
    for data in &packages {
        dialect::query(
            "INSERT INTO key_packages (device_id, data, last_resort, created_at) VALUES ($1, $2, FALSE, $3)",
        )
        .bind(device)
        .bind(data)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(data) = last_resort {
        dialect::query("DELETE FROM key_packages WHERE device_id = $1 AND last_resort")
            .bind(device)
            .execute(&mut *tx)
            .await?;
        dialect::query(
            "INSERT INTO key_packages (device_id, data, last_resort, created_at) VALUES ($1, $2, TRUE, $3)",
        )
        .bind(device)
        .bind(data)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    let after = stock_in(&mut *tx, device).await?;
    tx.commit().await?;
    Ok(Some(after))
}

pub(crate) async fn claim_key_packages(
    db: &Pool,
    user: UserId,
    devices: Option<&[DeviceId]>,
) -> Result<Vec<(DeviceId, Vec<u8>)>> {
    let mut tx = dialect::begin_write(db).await?;
    let live: Vec<DeviceId> = dialect::query_scalar(
        "SELECT id FROM devices WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
    )
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::new();
    for device in live {
        if devices.is_some_and(|only| !only.contains(&device)) {
            continue;
        }
        // Ordinary packages first (oldest), the last-resort one after them.
        let row = dialect::query(&format!(
            "SELECT id, data, last_resort FROM key_packages WHERE device_id = $1
             ORDER BY last_resort, id LIMIT 1 {}",
            dialect::SKIP_LOCKED
        ))
        .bind(device)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        let id: i64 = row.try_get(0)?;
        if !row.try_get::<bool, _>(2)? {
            dialect::query("DELETE FROM key_packages WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        out.push((device, row.try_get(1)?));
    }
    tx.commit().await?;
    Ok(out)
}
