//! Validation of what users type: usernames, passwords, display names and
//! client message ids. Each rule answers with the documented error code and a
//! message that says what to do.

use crate::error::{ApiError, ErrorCode};

/// Shortest allowed username.
pub const USERNAME_MIN: usize = 3;
/// Longest allowed username.
pub const USERNAME_MAX: usize = 32;
/// Shortest allowed password, in characters.
pub const PASSWORD_MIN: usize = 8;
/// Longest allowed password, in bytes (bounds the hashing work per request).
pub const PASSWORD_MAX: usize = 1024;
/// Longest display name, in characters.
pub const DISPLAY_NAME_MAX: usize = 64;
/// Longest status text, in characters.
pub const STATUS_TEXT_MAX: usize = 140;
/// Longest `client_msg_id`, in bytes.
pub const CLIENT_MSG_ID_MAX: usize = 64;

/// A username that follows the rules: 3-32 characters of `a-z`, `0-9`, `_`,
/// `.`, `-` (upper case is accepted and compared case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Checks a username.
    pub fn parse(s: &str) -> Result<Username, ApiError> {
        let ok_len = (USERNAME_MIN..=USERNAME_MAX).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok_len && ok_chars {
            Ok(Username(s.to_owned()))
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidUsername,
                "username must be 3-32 characters of a-z, 0-9, '_', '.', '-'",
            ))
        }
    }

    /// The username as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key usernames are unique by.
    pub fn canonical(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// Checks a new password: at least 8 characters, at most 1024 bytes.
pub fn check_password(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < PASSWORD_MIN {
        return Err(ApiError::new(
            ErrorCode::WeakPassword,
            "password must be at least 8 characters",
        ));
    }
    if p.len() > PASSWORD_MAX {
        return Err(ApiError::new(
            ErrorCode::WeakPassword,
            "password must be at most 1024 bytes",
        ));
    }
    Ok(())
}

/// Checks a display name: 1-64 characters, no control characters.
pub fn check_display_name(s: &str) -> Result<(), ApiError> {
    check_short_text(s, DISPLAY_NAME_MAX, "display_name", false)
}

/// Longest group title, in characters.
pub const GROUP_TITLE_MAX: usize = 64;

/// Checks a group title (already trimmed): 1-64 characters, no control
/// characters. Works in characters, not bytes: a Chinese title of 64
/// characters fits.
pub fn check_group_title(s: &str) -> Result<(), ApiError> {
    check_short_text(s, GROUP_TITLE_MAX, "title", false)
}

/// Checks a status text: at most 140 characters, no control characters.
pub fn check_status_text(s: &str) -> Result<(), ApiError> {
    check_short_text(s, STATUS_TEXT_MAX, "status_text", true)
}

fn check_short_text(s: &str, max: usize, field: &str, may_be_empty: bool) -> Result<(), ApiError> {
    let n = s.chars().count();
    if (!may_be_empty && s.trim().is_empty()) || n > max || s.chars().any(char::is_control) {
        let least = if may_be_empty { 0 } else { 1 };
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{field} must be {least}-{max} characters without control characters"),
        ));
    }
    Ok(())
}

/// Checks a `client_msg_id`: 1-64 bytes of `A-Z a-z 0-9 - _ . :` (a UUID fits).
pub fn check_client_msg_id(s: &str) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= CLIENT_MSG_ID_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::BadRequest,
            "client_msg_id must be 1-64 characters of A-Z, a-z, 0-9, '-', '_', '.', ':' (use a uuid)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        let cases = [
            ("ann", true),
            ("Ann.Lee-99_x", true),
            ("ab", false),
            (&"a".repeat(32), true),
            (&"a".repeat(33), false),
            ("has space", false),
            ("ünï", false),
            ("", false),
            ("semi;colon", false),
        ];
        for (name, ok) in cases {
            assert_eq!(Username::parse(name).is_ok(), ok, "{name}");
        }
        assert_eq!(
            Username::parse("AnN").map(|u| u.canonical()).ok(),
            Some("ann".to_string())
        );
    }

    #[test]
    fn passwords() {
        assert!(check_password("12345678").is_ok());
        assert!(check_password("ünïcödé!").is_ok());
        assert_eq!(
            check_password("1234567").map_err(|e| e.code),
            Err(ErrorCode::WeakPassword)
        );
        assert!(check_password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn client_msg_ids() {
        assert!(check_client_msg_id("0191e3f2-7c1a-7b2e-9d3a-1c2b3d4e5f60").is_ok());
        assert!(check_client_msg_id("").is_err());
        assert!(check_client_msg_id("a b").is_err());
        assert!(check_client_msg_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn short_texts() {
        assert!(check_display_name("Ann").is_ok());
        assert!(check_display_name(" ").is_err());
        assert!(check_display_name("a\u{7}").is_err());
        assert!(check_status_text("").is_ok());
        assert!(check_status_text(&"x".repeat(141)).is_err());
    }
}
