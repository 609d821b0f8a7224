//! The migrations of schema `auth`, embedded in the binary.

use ferrobase_common::migrate::Migration;

/// Every migration of schema `auth`, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: "20250101000000",
        sql: include_str!("../migrations/20250101000000_auth_schema.sql"),
    },
    Migration {
        version: "20251202000000",
        sql: include_str!("../migrations/20251202000000_email_send_windows.sql"),
    },
];
