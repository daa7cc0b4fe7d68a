//! Precedence and validation: CLI > env > s3mount TOML > AWS shared files > defaults.
//!
//! The environment is passed in as [`Env`] (a snapshot), so tests resolve profiles without
//! touching the process environment.

use super::files::{IniProfiles, TomlFile, TomlProfile, read_aws_ini, read_toml};
use super::{
    Addressing, ConfigError, FsOptions, FuseOptions, MountConfig, ObjectOptions, S3Settings,
    Secret, parse_size,
};
use crate::cli::{MountArgs, S3Args};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default metadata TTL: short enough that changes made by other clients show up quickly, long
/// enough that `ls -l` of a big directory does not HEAD every entry twice.
const DEFAULT_METADATA_TTL: Duration = Duration::from_secs(10);
/// Default data memory (page cache + prefetch): a 1 GiB-class machine can spare it, and it holds
/// four 64 MiB prefetch windows in flight.
const DEFAULT_CACHE_SIZE: u64 = 512 << 20;
/// Default bytes of a file being written kept in memory: small files never touch the disk.
const DEFAULT_WRITE_BUFFER: u64 = 16 << 20;
/// Files above this size go up as multipart uploads: below it one PutObject is as fast and costs
/// one request instead of three or more.
const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Part size: 8 MiB parts keep 8 uploads in flight within 64 MiB of buffers and allow files of
/// 78 GiB at 10,000 parts before a larger size is picked at close.
const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// Default attempts per request (first try included).
const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default per-attempt wait for response headers, and for more bytes of a stalled body: long
/// enough for a slow store under load (AWS answers in 10-100 ms; a busy Ceph in seconds), short
/// enough that a server that accepted a request and went silent fails the call in under two
/// minutes with the retries, instead of hanging the reader forever.
const DEFAULT_REQUEST_TIMEOUT_SECS: f64 = 30.0;

/// A snapshot of the environment and of where the user's files are.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: HashMap<String, String>,
    pub home: Option<PathBuf>,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn path_or_home(&self, var: &str, rel: &str) -> Option<PathBuf> {
        self.get(var)
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(rel)))
    }
}

/// Where a mount's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub profile: Option<String>,
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
}

pub fn parse_source(s: &str) -> Result<Source, ConfigError> {
    let bad = |why: &str| {
        ConfigError(format!(
            "bad source '{s}': {why}; expected bucket, profile:bucket/prefix or s3://bucket/prefix"
        ))
    };
    let (profile, rest) = if let Some(rest) = s.strip_prefix("s3://") {
        (None, rest)
    } else if let Some(rest) = s.strip_prefix("s3+") {
        let (p, r) = rest.split_once("://").ok_or_else(|| bad("missing ://"))?;
        (Some(p.to_string()), r)
    } else if let Some((p, r)) = s.split_once(':') {
        (Some(p.to_string()), r)
    } else {
        (None, s)
    };
    if profile.as_deref() == Some("") {
        return Err(bad("empty profile name"));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket name"));
    }
    let prefix = prefix.trim_matches('/');
    Ok(Source {
        profile,
        bucket: bucket.to_string(),
        prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        },
    })
}

/// `auto` -> None (detect), `on`/`off` (or true/false) -> fixed.
fn parse_auto_bool(v: &str, what: &str) -> Result<Option<bool>, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "auto" => Ok(None),
        "on" | "true" | "yes" | "1" => Ok(Some(true)),
        "off" | "false" | "no" | "0" => Ok(Some(false)),
        _ => Err(ConfigError(format!(
            "bad {what} '{v}': use auto, on or off"
        ))),
    }
}

/// Resolves the S3 settings of `profile` (None: $AWS_PROFILE or `default`) for `bucket`.
pub fn resolve_s3(
    profile: Option<&str>,
    bucket: &str,
    cli: &S3Args,
    env: &Env,
) -> Result<S3Settings, ConfigError> {
    let profile = profile
        .map(str::to_string)
        .or_else(|| env.get("AWS_PROFILE").map(str::to_string))
        .unwrap_or_else(|| "default".to_string());
    let is_default = profile == "default";
    let env_prefix = if is_default {
        String::new()
    } else {
        let up: String = profile
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{up}__")
    };
    let e = |name: &str| env.get(&format!("{env_prefix}{name}")).map(str::to_string);

    let toml_path = env.path_or_home("S3MOUNT_CONFIG", ".config/s3mount/config.toml");
    let toml: TomlFile = match &toml_path {
        Some(p) => read_toml(p).map_err(ConfigError)?,
        None => TomlFile::default(),
    };
    let cred_path = env.path_or_home("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let conf_path = env.path_or_home("AWS_CONFIG_FILE", ".aws/config");
    let creds: IniProfiles = match &cred_path {
        Some(p) => read_aws_ini(p, false).map_err(ConfigError)?,
        None => Default::default(),
    };
    let confs: IniProfiles = match &conf_path {
        Some(p) => read_aws_ini(p, true).map_err(ConfigError)?,
        None => Default::default(),
    };

    let t: Option<&TomlProfile> = toml.profiles.get(&profile);
    let c = creds.get(&profile);
    let f = confs.get(&profile);
    let ini = |k: &str| {
        c.and_then(|m| m.get(k))
            .or_else(|| f.and_then(|m| m.get(k)))
            .cloned()
    };

    let env_known = env
        .vars
        .keys()
        .any(|k| !env_prefix.is_empty() && k.starts_with(&env_prefix));
    if !is_default && t.is_none() && c.is_none() && f.is_none() && !env_known {
        return Err(ConfigError(format!(
            "unknown profile '{profile}': not in {}, {}, {} nor in {env_prefix}* env vars; add it or fix the name",
            show(&cred_path),
            show(&conf_path),
            show(&toml_path),
        )));
    }

    let access_key = e("AWS_ACCESS_KEY_ID")
        .or_else(|| t.and_then(|t| t.access_key_id.clone()))
        .or_else(|| ini("aws_access_key_id"));
    let secret_key = e("AWS_SECRET_ACCESS_KEY")
        .or_else(|| t.and_then(|t| t.secret_access_key.clone()))
        .or_else(|| ini("aws_secret_access_key"));
    let session_token = e("AWS_SESSION_TOKEN")
        .or_else(|| t.and_then(|t| t.session_token.clone()))
        .or_else(|| ini("aws_session_token"));
    let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
        return Err(ConfigError(format!(
            "profile '{profile}' has no access key and secret: set {env_prefix}AWS_ACCESS_KEY_ID and {env_prefix}AWS_SECRET_ACCESS_KEY, or add aws_access_key_id/aws_secret_access_key to [{profile}] in {}",
            show(&cred_path)
        )));
    };

    let endpoint = cli
        .endpoint
        .clone()
        .or_else(|| e("AWS_ENDPOINT_URL_S3"))
        .or_else(|| e("AWS_ENDPOINT_URL"))
        .or_else(|| e("OSS_ENDPOINT"))
        .or_else(|| t.and_then(|t| t.endpoint.clone()))
        .or_else(|| ini("s3.endpoint_url"))
        .or_else(|| ini("endpoint_url"))
        .map(|ep| normalize_endpoint(&ep))
        .transpose()?;

    let addressing = match cli
        .addressing_style
        .clone()
        .or_else(|| e("AWS_S3_ADDRESSING_STYLE"))
        .or_else(|| t.and_then(|t| t.addressing_style.clone()))
        .or_else(|| ini("s3.addressing_style"))
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("auto") => Addressing::Auto,
        Some("path") => Addressing::Path,
        Some("virtual") => Addressing::Virtual,
        Some(other) => {
            return Err(ConfigError(format!(
                "bad addressing style '{other}' for profile '{profile}': use path, virtual or auto"
            )));
        }
    };

    let region = cli
        .region
        .clone()
        .or_else(|| e("AWS_REGION"))
        .or_else(|| e("AWS_DEFAULT_REGION"))
        .or_else(|| t.and_then(|t| t.region.clone()))
        .or_else(|| ini("s3.region"))
        .or_else(|| ini("region"))
        .unwrap_or_else(|| "us-east-1".to_string());

    let verify_tls = match cli
        .no_verify_tls
        .then(|| "false".to_string())
        .or_else(|| e("AWS_S3_VERIFY"))
    {
        Some(v) => parse_bool(&v).ok_or_else(|| {
            ConfigError(format!(
                "bad {env_prefix}AWS_S3_VERIFY '{v}': use true or false"
            ))
        })?,
        None => t.and_then(|t| t.verify_tls).unwrap_or(true),
    };

    let ca_bundle = cli
        .ca_bundle
        .clone()
        .or_else(|| e("AWS_CA_BUNDLE"))
        .or_else(|| t.and_then(|t| t.ca_bundle.clone()))
        .or_else(|| ini("ca_bundle"))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);

    let signature = match cli
        .signature
        .clone()
        .or_else(|| t.and_then(|t| t.signature.clone()))
        .or_else(|| ini("s3.signature_version"))
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("auto") => None,
        Some("v4" | "4" | "s3v4" | "sigv4") => Some(4),
        Some("v2" | "2" | "s3" | "sigv2") => Some(2),
        Some(v) => {
            return Err(ConfigError(format!(
                "bad signature '{v}' for profile '{profile}': use auto, v4 or v2"
            )));
        }
    };

    let max_retries = match env
        .get("S3MOUNT_MAX_RETRIES")
        .or_else(|| env.get("MEGFILE_S3_MAX_RETRY_TIMES"))
    {
        Some(v) => v.parse::<u32>().map_err(|_| {
            ConfigError(format!("bad S3MOUNT_MAX_RETRIES '{v}': use a whole number"))
        })?,
        None => t.and_then(|t| t.max_retries).unwrap_or(DEFAULT_MAX_RETRIES),
    };

    let pick = |cli: &Option<String>, file: Option<&Option<String>>| {
        cli.clone().or_else(|| file.cloned().flatten())
    };
    let request_timeout = match cli
        .request_timeout
        .clone()
        .or_else(|| env.get("S3MOUNT_REQUEST_TIMEOUT").map(str::to_string))
        .or_else(|| t.and_then(|t| t.request_timeout.map(|v| v.to_string())))
    {
        None => std::time::Duration::from_secs_f64(DEFAULT_REQUEST_TIMEOUT_SECS),
        Some(v) => match v.trim().trim_end_matches('s').parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() => std::time::Duration::from_secs_f64(secs),
            _ => {
                return Err(ConfigError(format!(
                    "bad request_timeout '{v}': use a number of seconds above 0, e.g. 30"
                )));
            }
        },
    };
    let multipart = pick(&cli.multipart, t.map(|t| &t.multipart))
        .map(|v| parse_auto_bool(&v, "multipart"))
        .transpose()?
        .flatten();
    let copy = pick(&cli.copy, t.map(|t| &t.copy))
        .map(|v| parse_auto_bool(&v, "copy"))
        .transpose()?
        .flatten();
    let list_version = match pick(&cli.list_version, t.map(|t| &t.list_version)).as_deref() {
        None | Some("auto") => None,
        Some("1") => Some(1),
        Some("2") => Some(2),
        Some(v) => {
            return Err(ConfigError(format!(
                "bad list_version '{v}': use auto, 1 or 2"
            )));
        }
    };

    let object = ObjectOptions {
        sse: match pick(&cli.sse, t.map(|t| &t.sse)).as_deref() {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("aes256") || v.eq_ignore_ascii_case("sse-s3") => {
                Some("AES256".into())
            }
            Some(v) if v.eq_ignore_ascii_case("aws:kms") || v.eq_ignore_ascii_case("sse-kms") => {
                Some("aws:kms".into())
            }
            Some(v) => {
                return Err(ConfigError(format!(
                    "bad sse '{v}' for profile '{profile}': use AES256 (SSE-S3) or aws:kms (SSE-KMS)"
                )));
            }
        },
        sse_kms_key_id: pick(&cli.sse_kms_key_id, t.map(|t| &t.sse_kms_key_id)),
        storage_class: pick(&cli.storage_class, t.map(|t| &t.storage_class)),
        acl: pick(&cli.acl, t.map(|t| &t.acl)),
        requester_pays: cli.requester_pays || t.and_then(|t| t.requester_pays).unwrap_or(false),
    };
    if object.sse_kms_key_id.is_some() && object.sse.as_deref() != Some("aws:kms") {
        return Err(ConfigError(format!(
            "sse_kms_key_id is set for profile '{profile}' without sse = aws:kms: add --sse aws:kms"
        )));
    }
    Ok(S3Settings {
        object,
        profile,
        endpoint,
        region,
        addressing,
        access_key,
        secret_key: Secret::new(secret_key),
        session_token: session_token.map(Secret::new),
        verify_tls,
        ca_bundle,
        signature,
        max_retries,
        request_timeout,
        multipart,
        list_version,
        copy,
        bucket: bucket.to_string(),
    })
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no home)".into())
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Adds `https://` to a bare host (OSS_ENDPOINT style) and checks the URL shape.
fn normalize_endpoint(ep: &str) -> Result<String, ConfigError> {
    let ep = ep.trim().trim_end_matches('/');
    let full = if ep.contains("://") {
        ep.to_string()
    } else {
        format!("https://{ep}")
    };
    let uri: http::Uri = full.parse().map_err(|_| {
        ConfigError(format!(
            "bad endpoint '{ep}': expected http(s)://host[:port]"
        ))
    })?;
    // The port as written (`Uri::port` is `None` for one that does not fit in 16 bits).
    let written_port = uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or(""))
        .filter(|hp| !hp.ends_with(']'))
        .and_then(|hp| hp.rsplit_once(':').map(|(_, p)| p.to_string()));
    if written_port.is_some_and(|p| p.parse::<u16>().is_err() || p == "0") {
        return Err(ConfigError(format!(
            "bad endpoint '{ep}': the port must be 1 to 65535"
        )));
    }
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(full),
        _ => Err(ConfigError(format!(
            "bad endpoint '{ep}': expected http(s)://host[:port]"
        ))),
    }
}

fn parse_mode(s: &str, what: &str) -> Result<u16, ConfigError> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            ConfigError(format!(
                "bad {what} '{s}': use octal permission bits such as 644"
            ))
        })
}

/// Merges `-o` options into the args (flags given explicitly win) and resolves everything.
pub fn resolve_mount(args: &MountArgs, env: &Env) -> Result<MountConfig, ConfigError> {
    let mut a = args.clone();
    let mut fuse = FuseOptions::default();
    for opt in args.options.iter().flat_map(|o| o.split(',')) {
        let opt = opt.trim();
        if opt.is_empty() {
            continue;
        }
        let (k, v) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (opt, None),
        };
        let need = |v: Option<String>| {
            v.ok_or_else(|| ConfigError(format!("mount option '{k}' needs a value: {k}=VALUE")))
        };
        match k {
            "ro" => a.read_only = true,
            "rw" => a.read_write = true,
            "allow_other" => fuse.allow_other = true,
            "allow_root" => fuse.allow_root = true,
            "auto_unmount" => fuse.auto_unmount = true,
            "nonempty" => fuse.nonempty = true,
            "uid" => a.uid = a.uid.or(Some(need(v)?.parse().map_err(|_| bad_opt(opt))?)),
            "gid" => a.gid = a.gid.or(Some(need(v)?.parse().map_err(|_| bad_opt(opt))?)),
            "file_mode" => a.file_mode = a.file_mode.or(Some(need(v)?)),
            "dir_mode" => a.dir_mode = a.dir_mode.or(Some(need(v)?)),
            "profile" => a.s3.profile = a.s3.profile.or(Some(need(v)?)),
            "endpoint" => a.s3.endpoint = a.s3.endpoint.or(Some(need(v)?)),
            "region" => a.s3.region = a.s3.region.or(Some(need(v)?)),
            "addressing_style" => a.s3.addressing_style = a.s3.addressing_style.or(Some(need(v)?)),
            "metadata_ttl" => a.metadata_ttl = a.metadata_ttl.or(Some(need(v)?)),
            "cache_size" => a.cache_size = a.cache_size.or(Some(need(v)?)),
            "cache_dir" => a.cache_dir = a.cache_dir.or(Some(need(v)?.into())),
            "write_buffer" => a.write_buffer = a.write_buffer.or(Some(need(v)?)),
            "log_file" => a.log_file = a.log_file.or(Some(need(v)?.into())),
            "metrics_addr" => a.metrics_addr = a.metrics_addr.or(Some(need(v)?)),
            "foreground" => a.foreground = true,
            "posix_metadata" => a.posix_metadata = true,
            "no_multipart" => a.no_multipart = true,
            "multipart" => a.s3.multipart = a.s3.multipart.or(Some(need(v)?)),
            "list_version" => a.s3.list_version = a.s3.list_version.or(Some(need(v)?)),
            "copy" => a.s3.copy = a.s3.copy.or(Some(need(v)?)),
            "request_timeout" => a.s3.request_timeout = a.s3.request_timeout.or(Some(need(v)?)),
            "sse" => a.s3.sse = a.s3.sse.or(Some(need(v)?)),
            "sse_kms_key_id" => a.s3.sse_kms_key_id = a.s3.sse_kms_key_id.or(Some(need(v)?)),
            "storage_class" => a.s3.storage_class = a.s3.storage_class.or(Some(need(v)?)),
            "acl" => a.s3.acl = a.s3.acl.or(Some(need(v)?)),
            "requester_pays" => a.s3.requester_pays = true,
            "signature" => a.s3.signature = a.s3.signature.or(Some(need(v)?)),
            "ca_bundle" => a.s3.ca_bundle = a.s3.ca_bundle.or(Some(need(v)?)),
            "no_verify_tls" => a.s3.no_verify_tls = true,
            "multipart_threshold" => {
                a.multipart_threshold = a.multipart_threshold.or(Some(need(v)?))
            }
            "part_size" => a.part_size = a.part_size.or(Some(need(v)?)),
            "max_parts" => {
                a.max_parts = a
                    .max_parts
                    .or(Some(need(v)?.parse().map_err(|_| bad_opt(opt))?))
            }
            // fstab/mount(8) words with no meaning for a FUSE daemon.
            "_netdev" | "nofail" | "noauto" | "auto" | "user" | "users" | "nouser" | "defaults"
            | "dev" | "suid" | "exec" | "async" => {}
            "nosuid" | "nodev" | "noexec" | "noatime" | "atime" | "sync" | "dirsync" => {
                fuse.passthrough.push(k.to_string())
            }
            _ => {
                // The key only: a value may be a secret someone tried to pass this way.
                return Err(ConfigError(format!(
                    "unknown mount option '{k}'; see `s3mount --help` for the supported -o options (keys and secrets go in the profile or the environment, never on the command line)"
                )));
            }
        }
    }

    let source_text = a
        .source
        .clone()
        .ok_or_else(|| ConfigError("missing SOURCE".into()))?;
    let mountpoint = a
        .mountpoint
        .clone()
        .ok_or_else(|| ConfigError("missing MOUNTPOINT".into()))?;
    let source = parse_source(&source_text)?;
    let profile = source.profile.clone().or(a.s3.profile.clone());
    let s3 = resolve_s3(profile.as_deref(), &source.bucket, &a.s3, env)?;

    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let metadata_ttl = match &a.metadata_ttl {
        Some(v) => Duration::from_secs_f64(
            v.trim_end_matches('s')
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "bad metadata TTL '{v}': use seconds, e.g. --metadata-ttl 30"
                    ))
                })?,
        ),
        None => DEFAULT_METADATA_TTL,
    };
    let cache_size = match &a.cache_size {
        Some(v) => parse_size(v)?,
        None => DEFAULT_CACHE_SIZE,
    };
    if cache_size < 16 << 20 {
        return Err(ConfigError(format!(
            "cache size {cache_size} bytes is too small: use at least 16M"
        )));
    }
    let fs = FsOptions {
        uid: a.uid.unwrap_or(uid),
        gid: a.gid.unwrap_or(gid),
        file_mode: a
            .file_mode
            .as_deref()
            .map(|m| parse_mode(m, "file mode"))
            .transpose()?
            .unwrap_or(0o644),
        dir_mode: a
            .dir_mode
            .as_deref()
            .map(|m| parse_mode(m, "dir mode"))
            .transpose()?
            .unwrap_or(0o755),
        metadata_ttl,
        cache_size,
        read_only: a.read_only,
        cache_dir: a
            .cache_dir
            .clone()
            .unwrap_or_else(|| default_cache_dir(env, uid)),
        write_buffer: match &a.write_buffer {
            Some(v) => parse_size(v)?,
            None => DEFAULT_WRITE_BUFFER,
        },
        origin: format!("{} {}", s3.endpoint.as_deref().unwrap_or("aws"), s3.bucket),
        posix_metadata: a.posix_metadata,
        multipart: !a.no_multipart && s3.multipart != Some(false),
        multipart_threshold: match &a.multipart_threshold {
            Some(v) => parse_size(v)?,
            None => DEFAULT_MULTIPART_THRESHOLD,
        },
        part_size: match &a.part_size {
            Some(v) => parse_size(v)?,
            None => DEFAULT_PART_SIZE,
        },
        max_parts: a.max_parts.unwrap_or(crate::store::MAX_PARTS),
    };
    if !(crate::store::MIN_PART_SIZE..=crate::store::MAX_PART_SIZE).contains(&fs.part_size) {
        return Err(ConfigError(format!(
            "part size {} is outside S3's limits: use 5M to 5G, e.g. --part-size 8M",
            fs.part_size
        )));
    }
    if !(1..=crate::store::MAX_PARTS).contains(&fs.max_parts) {
        return Err(ConfigError(format!(
            "max parts {} is outside S3's limits: use 1 to 10000",
            fs.max_parts
        )));
    }
    Ok(MountConfig {
        s3,
        prefix: source.prefix,
        source: source_text,
        mountpoint,
        fs,
        fuse,
        foreground: a.foreground,
        log_file: a.log_file,
        metrics_addr: a
            .metrics_addr
            .as_deref()
            .map(|v| {
                v.parse().map_err(|_| {
                    ConfigError(format!(
                        "bad metrics address '{v}': use IP:PORT, e.g. --metrics-addr 127.0.0.1:9100"
                    ))
                })
            })
            .transpose()?,
        verbose: a.verbose,
    })
}

/// `$XDG_CACHE_HOME/s3mount`, `~/.cache/s3mount`, or `/var/cache/s3mount` for root.
fn default_cache_dir(env: &Env, uid: u32) -> PathBuf {
    if uid == 0 && env.get("XDG_CACHE_HOME").is_none() {
        return PathBuf::from("/var/cache/s3mount");
    }
    env.get("XDG_CACHE_HOME")
        .map(|d| PathBuf::from(d).join("s3mount"))
        .or_else(|| env.home.as_ref().map(|h| h.join(".cache/s3mount")))
        .unwrap_or_else(|| std::env::temp_dir().join("s3mount"))
}

fn bad_opt(opt: &str) -> ConfigError {
    ConfigError(format!("bad mount option '{opt}': expected a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn env_with(home: &std::path::Path, vars: &[(&str, &str)]) -> Env {
        Env {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            home: Some(home.to_path_buf()),
        }
    }

    #[test]
    fn sources() {
        let s = parse_source("p1:bucket/a/b/").unwrap();
        assert_eq!(
            s,
            Source {
                profile: Some("p1".into()),
                bucket: "bucket".into(),
                prefix: "a/b/".into()
            }
        );
        let s = parse_source("s3+p2://bk/x").unwrap();
        assert_eq!(
            (s.profile.as_deref(), s.bucket.as_str(), s.prefix.as_str()),
            (Some("p2"), "bk", "x/")
        );
        let s = parse_source("s3://bk").unwrap();
        assert_eq!((s.profile, s.prefix.as_str()), (None, ""));
        assert_eq!(parse_source("bk").unwrap().bucket, "bk");
        assert!(parse_source(":bk").unwrap_err().0.contains("empty profile"));
        assert!(parse_source("p:/x").unwrap_err().0.contains("no bucket"));
    }

    #[test]
    fn env_beats_toml_beats_aws_files() {
        let home = tempfile::tempdir().unwrap();
        fs::create_dir_all(home.path().join(".aws")).unwrap();
        fs::create_dir_all(home.path().join(".config/s3mount")).unwrap();
        fs::write(
            home.path().join(".aws/credentials"),
            "[p1]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n",
        )
        .unwrap();
        fs::write(
            home.path().join(".aws/config"),
            "[profile p1]\nregion = eu-central-1\ns3 =\n  addressing_style = virtual\n  endpoint_url = http://files:9000\n",
        )
        .unwrap();
        fs::write(
            home.path().join(".config/s3mount/config.toml"),
            "[profiles.p1]\nregion = \"toml-region\"\n",
        )
        .unwrap();
        let env = env_with(
            home.path(),
            &[
                ("P1__AWS_ACCESS_KEY_ID", "ENVKEY"),
                ("AWS_ACCESS_KEY_ID", "PLAIN"),
            ],
        );
        let s = resolve_s3(Some("p1"), "b", &S3Args::default(), &env).unwrap();
        assert_eq!(s.access_key, "ENVKEY");
        assert_eq!(s.secret_key.expose(), "FILESECRET");
        assert_eq!(s.region, "toml-region");
        assert_eq!(s.endpoint.as_deref(), Some("http://files:9000"));
        assert_eq!(s.addressing, Addressing::Virtual);
        let cli = S3Args {
            region: Some("cli-region".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve_s3(Some("p1"), "b", &cli, &env).unwrap().region,
            "cli-region"
        );
    }

    #[test]
    fn default_profile_uses_plain_env() {
        let home = tempfile::tempdir().unwrap();
        let env = env_with(
            home.path(),
            &[
                ("AWS_ACCESS_KEY_ID", "K"),
                ("AWS_SECRET_ACCESS_KEY", "S"),
                ("OSS_ENDPOINT", "oss-cn-hangzhou.aliyuncs.com"),
                ("AWS_S3_VERIFY", "false"),
            ],
        );
        let s = resolve_s3(None, "b", &S3Args::default(), &env).unwrap();
        assert_eq!(
            s.endpoint.as_deref(),
            Some("https://oss-cn-hangzhou.aliyuncs.com")
        );
        assert!(!s.verify_tls);
        assert_eq!(s.profile, "default");
    }

    #[test]
    fn signature_and_ca_bundle_sources() {
        let home = tempfile::tempdir().unwrap();
        let aws = home.path().join(".aws");
        std::fs::create_dir_all(&aws).unwrap();
        std::fs::write(
            aws.join("config"),
            "[profile old]\nca_bundle = /etc/ini-ca.pem\ns3 =\n  signature_version = s3\n",
        )
        .unwrap();
        let env = env_with(
            home.path(),
            &[
                ("OLD__AWS_ACCESS_KEY_ID", "K"),
                ("OLD__AWS_SECRET_ACCESS_KEY", "S"),
            ],
        );
        let s = resolve_s3(Some("old"), "b", &S3Args::default(), &env).unwrap();
        assert_eq!(
            s.signature,
            Some(2),
            "botocore's `signature_version = s3` is SigV2"
        );
        assert_eq!(s.ca_bundle.as_deref(), Some(Path::new("/etc/ini-ca.pem")));
        let env = env_with(
            home.path(),
            &[
                ("OLD__AWS_ACCESS_KEY_ID", "K"),
                ("OLD__AWS_SECRET_ACCESS_KEY", "S"),
                ("OLD__AWS_CA_BUNDLE", "/env-ca.pem"),
            ],
        );
        let cli = S3Args {
            signature: Some("auto".into()),
            no_verify_tls: true,
            ..Default::default()
        };
        let s = resolve_s3(Some("old"), "b", &cli, &env).unwrap();
        assert_eq!(s.signature, None, "the flag beats the file");
        assert_eq!(
            s.ca_bundle.as_deref(),
            Some(Path::new("/env-ca.pem")),
            "env beats files"
        );
        assert!(!s.verify_tls);
        let cli = S3Args {
            signature: Some("v3".into()),
            ..Default::default()
        };
        let e = resolve_s3(Some("old"), "b", &cli, &env).unwrap_err();
        assert!(
            e.0.contains("bad signature 'v3'") && e.0.contains("v2"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_problem_and_the_fix() {
        let home = tempfile::tempdir().unwrap();
        let env = env_with(home.path(), &[]);
        let e = resolve_s3(Some("nope"), "b", &S3Args::default(), &env).unwrap_err();
        assert!(e.0.starts_with("unknown profile 'nope'"), "{e}");
        let e = resolve_s3(None, "b", &S3Args::default(), &env).unwrap_err();
        assert!(
            e.0.contains("no access key") && e.0.contains("AWS_ACCESS_KEY_ID"),
            "{e}"
        );
        let env = env_with(
            home.path(),
            &[("AWS_ACCESS_KEY_ID", "K"), ("AWS_SECRET_ACCESS_KEY", "S")],
        );
        let cli = S3Args {
            endpoint: Some("ftp://x".into()),
            ..Default::default()
        };
        assert!(
            resolve_s3(None, "b", &cli, &env)
                .unwrap_err()
                .0
                .contains("bad endpoint")
        );
    }

    #[test]
    fn fstab_options() {
        let home = tempfile::tempdir().unwrap();
        let env = env_with(
            home.path(),
            &[("AWS_ACCESS_KEY_ID", "K"), ("AWS_SECRET_ACCESS_KEY", "S")],
        );
        let args = MountArgs {
            source: Some("bk/pre".into()),
            mountpoint: Some("/mnt".into()),
            options: vec!["ro,allow_other,uid=7,file_mode=600,_netdev".into()],
            ..Default::default()
        };
        let c = resolve_mount(&args, &env).unwrap();
        assert!(c.fs.read_only && c.fuse.allow_other);
        assert_eq!(
            (c.fs.uid, c.fs.file_mode, c.prefix.as_str()),
            (7, 0o600, "pre/")
        );
        let args = MountArgs {
            options: vec!["frobnicate".into()],
            ..args
        };
        assert!(
            resolve_mount(&args, &env)
                .unwrap_err()
                .0
                .contains("unknown mount option 'frobnicate'")
        );
    }
}
