//! The device registry.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};
use crate::devices::{Device, DeviceId, Platform, PushProvider, Registration};
use crate::plan::{Target, rfc3339};

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The device as stored.
    pub device: Device,
    /// Whether it is new for this user (201-worthy; the API answers 200 either way).
    pub created: bool,
    /// Other registrations that lost a token to this one (the phone changed hands).
    pub moved_from_others: u64,
    /// This user's devices dropped to stay within `DEVICES_PER_USER`.
    pub evicted: u64,
}

const DEVICE_COLUMNS: &str =
    "device_id, platform, push_provider, push_token, voip_token, bundle_id, created_at, updated_at";

fn device_row(row: &AnyRow) -> Result<Device, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("device {what}"));
    let device_id: String = row.try_get("device_id")?;
    Ok(Device {
        device_id: DeviceId::parse(&device_id).map_err(|_| corrupt("id"))?,
        platform: Platform::parse(&row.try_get::<String, _>("platform")?)
            .ok_or_else(|| corrupt("platform"))?,
        push_provider: PushProvider::parse(&row.try_get::<String, _>("push_provider")?)
            .ok_or_else(|| corrupt("provider"))?,
        push_token: row.try_get("push_token")?,
        voip_token: row.try_get("voip_token")?,
        bundle_id: row.try_get("bundle_id")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

impl Store {
    /// Registers (creates or replaces) `device_id` for `user_id`. A push or VoIP token that
    /// another registration holds moves here, and pushes still queued for that token on the
    /// other registration are cancelled: a phone rings for whoever is logged in on it. Keeps
    /// at most `max_per_user` devices, dropping the least recently updated.
    pub async fn register_device(
        &self,
        user_id: &str,
        device_id: &DeviceId,
        reg: &Registration,
        now_ms: i64,
        max_per_user: u32,
    ) -> Result<Registered, StoreError> {
        let mut tx = self.begin_write().await?;
        let device = device_id.as_str();
        let tokens: Vec<&str> = std::iter::once(reg.push_token.as_str())
            .chain(reg.voip_token.as_deref())
            .collect();

        // Pushes queued for these tokens under anyone else stop here, before the rows go.
        for token in &tokens {
            sqlx::query(
                "UPDATE deliveries SET status = 'cancelled', finished_at = $1, \
                 last_error = 'token moved to another registration' \
                 WHERE status = 'pending' AND token = $2 AND NOT (user_id = $3 AND device_id = $4)",
            )
            .bind(now_ms)
            .bind(*token)
            .bind(user_id)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        let moved_push = sqlx::query(
            "DELETE FROM devices WHERE push_provider = $1 AND push_token = $2 \
             AND NOT (user_id = $3 AND device_id = $4)",
        )
        .bind(reg.push_provider.as_str())
        .bind(&reg.push_token)
        .bind(user_id)
        .bind(device)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let moved_voip = match &reg.voip_token {
            Some(voip) => sqlx::query(
                "DELETE FROM devices WHERE voip_token = $1 AND NOT (user_id = $2 AND device_id = $3)",
            )
            .bind(voip)
            .bind(user_id)
            .bind(device)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            None => 0,
        };

        let existed =
            sqlx::query("SELECT 1 AS one FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if existed {
            // A replaced token is no longer this device's: what was queued for it goes too.
            sqlx::query(
                "UPDATE deliveries SET status = 'cancelled', finished_at = $1, \
                 last_error = 'device registered a new token' \
                 WHERE status = 'pending' AND user_id = $2 AND device_id = $3 \
                 AND token <> $4 AND token <> $5",
            )
            .bind(now_ms)
            .bind(user_id)
            .bind(device)
            .bind(&reg.push_token)
            .bind(reg.voip_token.as_deref().unwrap_or(""))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE devices SET platform = $1, push_provider = $2, push_token = $3, \
                 voip_token = $4, bundle_id = $5, updated_at = $6 \
                 WHERE user_id = $7 AND device_id = $8",
            )
            .bind(reg.platform.as_str())
            .bind(reg.push_provider.as_str())
            .bind(&reg.push_token)
            .bind(reg.voip_token.as_deref())
            .bind(reg.bundle_id.as_deref())
            .bind(now_ms)
            .bind(user_id)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO devices (user_id, device_id, platform, push_provider, push_token, \
                 voip_token, bundle_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(user_id)
            .bind(device)
            .bind(reg.platform.as_str())
            .bind(reg.push_provider.as_str())
            .bind(&reg.push_token)
            .bind(reg.voip_token.as_deref())
            .bind(reg.bundle_id.as_deref())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }

        // Over the cap: the least recently updated go (never the one just registered).
        let over = sqlx::query(
            "SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2 \
             ORDER BY updated_at DESC, device_id LIMIT 1000000 OFFSET $3",
        )
        .bind(user_id)
        .bind(device)
        .bind(i64::from(max_per_user.saturating_sub(1)))
        .fetch_all(&mut *tx)
        .await?;
        for row in &over {
            let id: String = row.try_get("device_id")?;
            delete_device(&mut tx, user_id, &id, now_ms).await?;
        }

        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 AND device_id = $2"
        )))
        .bind(user_id)
        .bind(device)
        .fetch_one(&mut *tx)
        .await?;
        let stored = device_row(&row)?;
        tx.commit().await?;
        Ok(Registered {
            device: stored,
            created: !existed,
            moved_from_others: moved_push + moved_voip,
            evicted: over.len() as u64,
        })
    }

    /// The user's devices, most recently updated first.
    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 \
             ORDER BY updated_at DESC, device_id"
        )))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_row).collect()
    }

    /// Deletes the user's device (and what is queued for it); `false` when they have none by
    /// that id.
    pub async fn delete_device(
        &self,
        user_id: &str,
        device_id: &DeviceId,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = delete_device(&mut tx, user_id, device_id.as_str(), now_ms).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Removes the registrations holding `token` (the provider said it is dead), unless they
    /// were registered again after `since` (unix milliseconds; Apple's 410 timestamp): a token
    /// registered after the provider last saw it valid is a new registration. Returns how many.
    pub async fn remove_invalid_token(
        &self,
        token: &str,
        since_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT user_id, device_id FROM devices WHERE (push_token = $1 OR voip_token = $1) \
             AND updated_at <= $2",
        )
        .bind(token)
        .bind(since_ms.unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        let mut removed = 0;
        for row in &rows {
            let user: String = row.try_get("user_id")?;
            let device: String = row.try_get("device_id")?;
            if delete_device(&mut tx, &user, &device, now_ms).await? {
                removed += 1;
            }
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Who to push to for `user_id` (inside the consuming transaction).
    pub(crate) async fn targets(
        conn: &mut sqlx::AnyConnection,
        user_id: &str,
    ) -> Result<Vec<Target>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, platform, push_provider, push_token, voip_token, bundle_id \
             FROM devices WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Target {
                    device_id: row.try_get("device_id")?,
                    platform: Platform::parse(&row.try_get::<String, _>("platform")?)
                        .ok_or_else(|| StoreError::Corrupt("device platform".into()))?,
                    push_provider: PushProvider::parse(&row.try_get::<String, _>("push_provider")?)
                        .ok_or_else(|| StoreError::Corrupt("device provider".into()))?,
                    push_token: row.try_get("push_token")?,
                    voip_token: row.try_get("voip_token")?,
                    bundle_id: row.try_get("bundle_id")?,
                })
            })
            .collect()
    }
}

/// Deletes one device and cancels what is queued for it.
async fn delete_device(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    device_id: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    sqlx::query(
        "UPDATE deliveries SET status = 'cancelled', finished_at = $1, last_error = 'device removed' \
         WHERE status = 'pending' AND user_id = $2 AND device_id = $3",
    )
    .bind(now_ms)
    .bind(user_id)
    .bind(device_id)
    .execute(&mut **tx)
    .await?;
    let deleted = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(deleted > 0)
}
