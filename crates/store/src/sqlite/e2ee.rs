//! The MLS delivery service's rows: encrypted conversations, device keys
//! and KeyPackages (the epoch rule itself is in the write path,
//! `write_plan::apply_epochs`).

use confab_proto::e2ee::{DeviceInfo, KeyPackageStock};
use confab_proto::{ConversationId, DeviceId, UserId};
use sqlx::{Row, SqlitePool};

use crate::types::Millis;
use crate::Result;

pub(crate) async fn conversation_encrypted(
    db: &SqlitePool,
    id: ConversationId,
) -> Result<Option<bool>> {
    Ok(
        sqlx::query_scalar("SELECT encrypted FROM conversations WHERE id = ?")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub(crate) async fn pin_device_key(
    db: &SqlitePool,
    device: DeviceId,
    key: &str,
) -> Result<Option<String>> {
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "UPDATE devices SET public_key = ? WHERE id = ? AND public_key IS NULL AND revoked_at IS NULL",
    )
    .bind(key)
    .bind(device)
    .execute(&mut *tx)
    .await?;
    let now: Option<Option<String>> =
        sqlx::query_scalar("SELECT public_key FROM devices WHERE id = ? AND revoked_at IS NULL")
            .bind(device)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(now.flatten())
}

pub(crate) async fn member_devices(
    db: &SqlitePool,
    id: ConversationId,
    devices: &[DeviceId],
) -> Result<Vec<DeviceId>> {
    let mut found = Vec::new();
    for chunk in devices.chunks(500) {
        let mut q: sqlx::QueryBuilder<sqlx::Sqlite> = sqlx::QueryBuilder::new(
            "SELECT d.id FROM devices d JOIN members m ON m.user_id = d.user_id
             WHERE m.conversation_id = ",
        );
        q.push_bind(id);
        q.push(" AND d.revoked_at IS NULL AND d.id IN (");
        let mut list = q.separated(", ");
        for d in chunk {
            list.push_bind(*d);
        }
        list.push_unseparated(")");
        found.extend(q.build_query_scalar::<i64>().fetch_all(db).await?);
    }
    Ok(found)
}

pub(crate) async fn live_devices(db: &SqlitePool, user: UserId) -> Result<Vec<DeviceInfo>> {
    let rows = sqlx::query(
        "SELECT id, public_key, created_at FROM devices WHERE user_id = ? AND revoked_at IS NULL
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

async fn stock_in(db: impl sqlx::SqliteExecutor<'_>, device: DeviceId) -> Result<KeyPackageStock> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(last_resort = 0), 0), COALESCE(MAX(last_resort), 0)
         FROM key_packages WHERE device_id = ?",
    )
    .bind(device)
    .fetch_one(db)
    .await?;
    Ok(KeyPackageStock {
        stock: row.try_get(0)?,
        last_resort: row.try_get::<i64, _>(1)? != 0,
    })
}

pub(crate) async fn key_package_stock(
    db: &SqlitePool,
    device: DeviceId,
) -> Result<KeyPackageStock> {
    stock_in(db, device).await
}

pub(crate) async fn add_key_packages(
    db: &SqlitePool,
    device: DeviceId,
    packages: Vec<Vec<u8>>,
    last_resort: Option<Vec<u8>>,
    max_stock: i64,
    now: Millis,
) -> Result<Option<KeyPackageStock>> {
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let before = stock_in(&mut *tx, device).await?;
    if before.stock + packages.len() as i64 > max_stock {
        return Ok(None);
    }
    for data in &packages {
        sqlx::query(
            "INSERT INTO key_packages (device_id, data, last_resort, created_at) VALUES (?, ?, 0, ?)",
        )
        .bind(device)
        .bind(data)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(data) = last_resort {
        sqlx::query("DELETE FROM key_packages WHERE device_id = ? AND last_resort = 1")
            .bind(device)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO key_packages (device_id, data, last_resort, created_at) VALUES (?, ?, 1, ?)",
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
    db: &SqlitePool,
    user: UserId,
    devices: Option<&[DeviceId]>,
) -> Result<Vec<(DeviceId, Vec<u8>)>> {
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let live: Vec<DeviceId> = sqlx::query_scalar(
        "SELECT id FROM devices WHERE user_id = ? AND revoked_at IS NULL ORDER BY id",
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
        let row = sqlx::query(
            "SELECT id, data, last_resort FROM key_packages WHERE device_id = ?
             ORDER BY last_resort, id LIMIT 1",
        )
        .bind(device)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        let id: i64 = row.try_get(0)?;
        if !row.try_get::<bool, _>(2)? {
            sqlx::query("DELETE FROM key_packages WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        out.push((device, row.try_get(1)?));
    }
    tx.commit().await?;
    Ok(out)
}
