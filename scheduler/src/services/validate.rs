//! Input validation of public requests. Every message names the offending field.

use crate::error::{Error, Result};
use cloud_api::CreateInstanceRequest;

pub const MAX_NAME_LEN: usize = 63;
pub const MIN_MEMORY_MB: u64 = 6; // Docker refuses less than 6 MiB
pub const MAX_MEMORY_MB: u64 = 16 * 1024 * 1024; // 16 TiB
pub const MAX_CPU_MILLIS: u64 = 1_024_000; // 1024 cores
const MAX_IMAGE_LEN: usize = 512;
const MAX_COMMAND_ARGS: usize = 256;
const MAX_COMMAND_BYTES: usize = 64 * 1024;
const MAX_ENV_VARS: usize = 256;
const MAX_ENV_BYTES: usize = 64 * 1024;

/// Names: 1–63 lowercase letters, digits and `-`, starting with a letter, not ending with `-`
/// (a DNS label, so names can become host names later).
pub fn name(field: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.as_bytes()[0].is_ascii_lowercase()
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok && uuid::Uuid::parse_str(s).is_ok() {
        return Err(Error::Invalid(format!(
            "{field}: {s:?} looks like an id; names must not be UUIDs (they would be ambiguous in paths)"
        )));
    }
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{field}: {s:?} is not a valid name: use 1-{MAX_NAME_LEN} lowercase letters, digits and '-', starting with a letter and not ending with '-'"
        )))
    }
}

pub fn create_instance(req: &CreateInstanceRequest) -> Result<()> {
    if let Some(n) = &req.name {
        name("name", n)?;
    }
    let image = req.image.trim();
    if image.is_empty() {
        return Err(Error::Invalid("image: must not be empty".into()));
    }
    if image.len() > MAX_IMAGE_LEN || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(format!(
            "image: {:?} is not a valid image reference",
            req.image
        )));
    }
    if !(1..=MAX_CPU_MILLIS).contains(&req.cpu_millis) {
        return Err(Error::Invalid(format!(
            "cpu_millis: {} is out of range: must be between 1 and {MAX_CPU_MILLIS} (1000 = one core)",
            req.cpu_millis
        )));
    }
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&req.memory_mb) {
        return Err(Error::Invalid(format!(
            "memory_mb: {} is out of range: must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB} MiB",
            req.memory_mb
        )));
    }
    if req.command.len() > MAX_COMMAND_ARGS
        || req.command.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES
    {
        return Err(Error::Invalid(format!(
            "command: at most {MAX_COMMAND_ARGS} arguments and {MAX_COMMAND_BYTES} bytes"
        )));
    }
    if req.command.iter().any(|a| a.contains('\0')) {
        return Err(Error::Invalid(
            "command: arguments must not contain NUL bytes".into(),
        ));
    }
    if req.env.len() > MAX_ENV_VARS
        || req
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            > MAX_ENV_BYTES
    {
        return Err(Error::Invalid(format!(
            "env: at most {MAX_ENV_VARS} variables and {MAX_ENV_BYTES} bytes"
        )));
    }
    for (k, v) in &req.env {
        let valid_key = !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_key {
            return Err(Error::Invalid(format!(
                "env: {k:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"
            )));
        }
        if v.contains('\0') {
            return Err(Error::Invalid(format!(
                "env.{k}: value must not contain NUL bytes"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> CreateInstanceRequest {
        serde_json::from_str(
            r#"{"name":"web","image":"local/busybox:latest","cpu_millis":250,"memory_mb":64}"#,
        )
        .unwrap()
    }

    #[test]
    fn accepts_a_normal_request() {
        create_instance(&req()).unwrap();
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["web", "a", "web-1", "x2"] {
            name("name", ok).unwrap();
        }
        for bad in [
            "",
            "Web",
            "1web",
            "web-",
            "we_b",
            "web.1",
            &"a".repeat(64),
            "abcdef01-2345-6789-abcd-ef0123456789",
        ] {
            let err = name("name", bad).unwrap_err().to_string();
            assert!(err.starts_with("name:"), "{err}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = Box<dyn Fn(&mut CreateInstanceRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("image", Box::new(|r| r.image = " ".into())),
            ("image", Box::new(|r| r.image = "has space".into())),
            ("cpu_millis", Box::new(|r| r.cpu_millis = 0)),
            ("cpu_millis", Box::new(|r| r.cpu_millis = u64::MAX)),
            ("memory_mb", Box::new(|r| r.memory_mb = 1)),
            ("memory_mb", Box::new(|r| r.memory_mb = u64::MAX)),
            (
                "env",
                Box::new(|r| {
                    r.env.insert("1BAD".into(), "x".into());
                }),
            ),
            ("command", Box::new(|r| r.command = vec!["x".into(); 1000])),
            ("name", Box::new(|r| r.name = Some("Bad Name".into()))),
        ];
        for (field, mutate) in cases {
            let mut r = req();
            mutate(&mut r);
            let err = create_instance(&r).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)));
            assert!(err.to_string().starts_with(field), "{field}: {err}");
        }
    }
}
