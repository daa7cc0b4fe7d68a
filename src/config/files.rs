//! Raw profile sources on disk: the AWS shared files (INI with nested `s3 =` blocks) and
//! s3mount's own TOML file. Parsing only; precedence lives in `resolve.rs`.
//!
//! AWS files: `~/.aws/credentials` names sections `[name]`; `~/.aws/config` names them
//! `[profile name]` (and `[default]`). A key with an empty value followed by indented lines opens
//! a nested block (`s3 =\n  addressing_style = path`); nested keys are stored as `s3.key`.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Profile name -> flattened key/value pairs (nested keys as `block.key`).
pub type IniProfiles = HashMap<String, HashMap<String, String>>;

/// Parses an AWS shared file. `config_style` strips the `profile ` prefix of section names.
/// A line that is neither a section header, `key = value`, a comment nor blank is an error
/// naming its number (as the AWS CLI refuses such files); the line itself is never shown: it
/// may be a secret pasted on its own.
pub fn parse_aws_ini(text: &str, config_style: bool) -> Result<IniProfiles, String> {
    let mut out: IniProfiles = HashMap::new();
    let mut section: Option<String> = None;
    let mut block: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let lineno = n + 1;
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') && !trimmed.ends_with(']') {
            return Err(format!(
                "{lineno}: a section header without its closing ']'"
            ));
        }
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            let name = trimmed[1..trimmed.len() - 1].trim();
            let name = if config_style {
                name.strip_prefix("profile ").map(str::trim).unwrap_or(name)
            } else {
                name
            };
            section = Some(name.to_string());
            block = None;
            continue;
        }
        let Some((k, v)) = trimmed.split_once('=') else {
            return Err(format!(
                "{lineno}: not `key = value` (nor a [section] header or a # comment)"
            ));
        };
        let Some(sec) = &section else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let entry = out.entry(sec.clone()).or_default();
        if indented && let Some(b) = &block {
            entry.insert(format!("{b}.{k}"), v);
        } else if v.is_empty() {
            block = Some(k);
        } else {
            block = None;
            entry.insert(k, v);
        }
    }
    Ok(out)
}

/// Reads and parses an AWS shared file; a missing file is an empty one.
pub fn read_aws_ini(path: &Path, config_style: bool) -> Result<IniProfiles, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse_aws_ini(&t, config_style)
            .map_err(|at| format!("{}:{at}: fix the file or remove the line", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// One profile in s3mount's TOML file (`[profiles.NAME]`). Every field optional.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TomlProfile {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// Signing region.
    pub region: Option<String>,
    /// `path`, `virtual` or `auto`.
    pub addressing_style: Option<String>,
    /// Verify the server's TLS certificate (default true).
    pub verify_tls: Option<bool>,
    /// PEM file of CA certificates to trust in addition to the system's.
    pub ca_bundle: Option<String>,
    /// `auto` (v4, falling back to v2), `v4` or `v2`.
    pub signature: Option<String>,
    /// Attempts per request, first try included.
    pub max_retries: Option<u32>,
    /// Seconds to wait per attempt for response headers or a stalled body (default 30).
    pub request_timeout: Option<f64>,
    /// `auto` (detect), `on` or `off`: multipart upload for large files.
    pub multipart: Option<String>,
    /// `auto` (detect), `1` or `2`: ListObjects version.
    pub list_version: Option<String>,
    /// `auto` (detect), `on` or `off`: server-side CopyObject (off: GET -> PUT).
    pub copy: Option<String>,
    /// Server-side encryption of objects written: `AES256` or `aws:kms`.
    pub sse: Option<String>,
    /// KMS key id for `aws:kms`.
    pub sse_kms_key_id: Option<String>,
    /// Storage class of objects written.
    pub storage_class: Option<String>,
    /// Canned ACL of objects written.
    pub acl: Option<String>,
    /// The bucket is requester-pays.
    pub requester_pays: Option<bool>,
}

/// s3mount's TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TomlFile {
    #[serde(default)]
    pub profiles: HashMap<String, TomlProfile>,
}

/// Reads the TOML file; a missing file is an empty one, a malformed one an error naming it.
pub fn read_toml(path: &Path) -> Result<TomlFile, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => toml::from_str(&t).map_err(|e| {
            format!(
                "bad config file {}: {}; fix the file or point S3MOUNT_CONFIG elsewhere",
                path.display(),
                e.message()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TomlFile::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_s3_block_and_profile_prefix() {
        let text = "[default]\nregion = eu-west-1\n\n[profile p1]\nregion=us-east-1\ns3 =\n  addressing_style = path\n  endpoint_url = http://h:9000\nendpoint_url = http://top\n";
        let p = parse_aws_ini(text, true).unwrap();
        assert_eq!(p["default"]["region"], "eu-west-1");
        assert_eq!(p["p1"]["s3.addressing_style"], "path");
        assert_eq!(p["p1"]["s3.endpoint_url"], "http://h:9000");
        assert_eq!(p["p1"]["endpoint_url"], "http://top");
    }

    #[test]
    fn credentials_file_keeps_section_names() {
        let p = parse_aws_ini(
            "[profile x]\naws_access_key_id = A\n# c\n[x]\naws_secret_access_key = S\n",
            false,
        )
        .unwrap();
        assert_eq!(p["profile x"]["aws_access_key_id"], "A");
        assert_eq!(p["x"]["aws_secret_access_key"], "S");
    }

    #[test]
    fn toml_rejects_unknown_fields_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[profiles.a]\nendpont = \"x\"\n").unwrap();
        let e = read_toml(&f).unwrap_err();
        assert!(e.contains("c.toml") && e.contains("endpont"), "{e}");
    }
}
