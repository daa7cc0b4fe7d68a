//! Multipart upload in the embedded server: create, upload part, complete, abort.
//!
//! Each part streams into its own data file (as a PUT does, with the same Content-MD5 and length
//! checks); complete concatenates the listed parts into one new data file and commits it like a
//! PUT, with S3's multipart ETag (MD5 of the part MD5s, `-N`). Unfinished uploads live in memory
//! only: a restarted server forgets them, as if they had been aborted.
//!
//! Rules enforced on complete, AWS's: parts ascend, each listed part exists with that ETag, every
//! part but the last is at least 5 MiB. (Cloudflare R2 also wants equal parts; s3fs-fuse sends
//! uneven ones, so the server takes them for the peer benchmarks. The in-memory store enforces
//! R2's rule on s3mount's own uploads.)
//!
//! Lock: one std `Mutex` over the upload map, held for map operations only (never across I/O).

use super::s3::{Backend, check_body, io_err, now_ns};
use super::storage::Meta;
use crate::s3rules::multipart_etag;
use crate::store::MIN_PART_SIZE;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// One uploaded part: its data file, size and MD5.
struct StoredPart {
    data: String,
    size: u64,
    md5: [u8; 16],
}

struct Upload {
    bucket: String,
    key: String,
    content_type: Option<String>,
    metadata: HashMap<String, String>,
    parts: BTreeMap<i32, StoredPart>,
}

/// Unfinished uploads by id.
#[derive(Default)]
pub struct Uploads {
    map: Mutex<HashMap<String, Upload>>,
    next: AtomicU64,
}

fn no_upload() -> s3s::S3Error {
    s3_error!(NoSuchUpload, "The specified upload does not exist")
}

impl Backend {
    pub async fn mp_create(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        self.bucket(&i.bucket)?;
        let id = format!(
            "{:x}-{:x}",
            now_ns(),
            self.uploads.next.fetch_add(1, Ordering::Relaxed)
        );
        let up = Upload {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            content_type: i.content_type,
            metadata: i.metadata.unwrap_or_default(),
            parts: BTreeMap::new(),
        };
        self.uploads.map.lock().unwrap().insert(id.clone(), up);
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    pub async fn mp_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let i = req.input;
        let b = self.bucket(&i.bucket)?;
        if !(1..=crate::store::MAX_PARTS as i32).contains(&i.part_number) {
            return Err(s3_error!(InvalidArgument, "Part number must be 1 to 10000"));
        }
        let known = |m: &HashMap<String, Upload>| {
            m.get(&i.upload_id)
                .is_some_and(|u| u.bucket == i.bucket && u.key == i.key)
        };
        if !known(&self.uploads.map.lock().unwrap()) {
            return Err(no_upload());
        }
        let body = i.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let (data, size, md5) = self.write_data(&b, body).await?;
        if let Err(e) = check_body(&i.content_md5, i.content_length, md5, size) {
            let _ = std::fs::remove_file(b.data_dir().join(&data));
            return Err(e);
        }
        let old = {
            let mut map = self.uploads.map.lock().unwrap();
            let Some(up) = map.get_mut(&i.upload_id) else {
                let _ = std::fs::remove_file(b.data_dir().join(&data));
                return Err(no_upload());
            };
            up.parts
                .insert(i.part_number, StoredPart { data, size, md5 })
        };
        if let Some(old) = old {
            let _ = std::fs::remove_file(b.data_dir().join(old.data));
        }
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(hex::encode(md5))),
            ..Default::default()
        }))
    }

    pub async fn mp_complete(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let b = self.bucket(&i.bucket)?;
        let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        // Check under the lock, take the upload out only when it is valid.
        let up = {
            let mut map = self.uploads.map.lock().unwrap();
            let up = map
                .get(&i.upload_id)
                .filter(|u| u.bucket == i.bucket && u.key == i.key)
                .ok_or_else(no_upload)?;
            check_parts(up, &listed)?;
            map.remove(&i.upload_id).unwrap()
        };
        let chosen: Vec<&StoredPart> = listed
            .iter()
            .map(|p| &up.parts[&p.part_number.unwrap_or(0)])
            .collect();
        let name = b.new_data_name();
        let dir = b.data_dir();
        let sources: Vec<std::path::PathBuf> = chosen.iter().map(|p| dir.join(&p.data)).collect();
        let dest = dir.join(&name);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&dest)?);
            for s in &sources {
                std::io::copy(&mut std::fs::File::open(s)?, &mut out)?;
            }
            out.flush()
        })
        .await
        .map_err(|e| s3_error!(InternalError, "{e}"))?
        .map_err(io_err)?;
        let md5s: Vec<[u8; 16]> = chosen.iter().map(|p| p.md5).collect();
        let etag = multipart_etag(&md5s);
        let meta = Meta {
            key: up.key.clone(),
            size: chosen.iter().map(|p| p.size).sum(),
            etag: etag.clone(),
            modified_ns: now_ns(),
            content_type: up.content_type.clone(),
            metadata: up.metadata.clone(),
            data: name,
        };
        b.commit(meta).map_err(io_err)?;
        for p in up.parts.values() {
            let _ = std::fs::remove_file(dir.join(&p.data));
        }
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(up.bucket),
            key: Some(up.key),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    pub async fn mp_abort(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        let b = self.bucket(&i.bucket)?;
        let up = self
            .uploads
            .map
            .lock()
            .unwrap()
            .remove(&i.upload_id)
            .ok_or_else(no_upload)?;
        for p in up.parts.values() {
            let _ = std::fs::remove_file(b.data_dir().join(&p.data));
        }
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    /// Unfinished uploads (for tests: none may leak).
    pub fn open_uploads(&self) -> usize {
        self.uploads.map.lock().unwrap().len()
    }
}

/// The completion rules (see the module note).
fn check_parts(up: &Upload, listed: &[CompletedPart]) -> S3Result<()> {
    if listed.is_empty() {
        return Err(s3_error!(MalformedXML, "no parts listed"));
    }
    let numbers: Vec<i32> = listed.iter().map(|p| p.part_number.unwrap_or(0)).collect();
    if numbers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(s3_error!(InvalidPartOrder));
    }
    let mut sizes = Vec::new();
    for (p, n) in listed.iter().zip(&numbers) {
        let stored = up.parts.get(n).ok_or_else(|| s3_error!(InvalidPart))?;
        let given = p.e_tag.as_ref().map(|e| e.value().trim_matches('"'));
        if given != Some(hex::encode(stored.md5).as_str()) {
            return Err(s3_error!(InvalidPart, "ETag of part {n} does not match"));
        }
        sizes.push(stored.size);
    }
    if sizes[..sizes.len() - 1].iter().any(|s| *s < MIN_PART_SIZE) {
        return Err(s3_error!(EntityTooSmall));
    }
    Ok(())
}
