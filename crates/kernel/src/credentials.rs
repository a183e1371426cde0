//! The rules a sign-up's credentials must meet, shared by the gateway (which refuses bad input
//! before it costs a password hash) and the auth service (which checks again, as every service
//! checks its own input).

/// Normalises an email (trimmed, lowercase) and checks its shape.
pub fn normalize_email(email: &str) -> Result<String, &'static str> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid {
        Ok(email)
    } else {
        Err("email must look like name@example.com")
    }
}

/// Checks a new password's length (8 to 128 characters).
pub fn check_password(password: &str) -> Result<(), &'static str> {
    match password.chars().count() {
        8..=128 => Ok(()),
        _ => Err("password must be 8 to 128 characters long"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_shapes_checked() {
        assert_eq!(
            normalize_email("  Ann@Example.COM "),
            Ok("ann@example.com".into())
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "a b@example.com",
            "a@b@c",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords_are_8_to_128_characters() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"é".repeat(128)).is_ok());
        assert!(check_password(&"x".repeat(129)).is_err());
    }
}
