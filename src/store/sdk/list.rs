//! Listings: ListObjectsV2, and ListObjects v1 for servers without it. The page token hides
//! which: a continuation token (v2) or a marker (v1).

use super::{SdkStore, to_system_time};
use crate::store::{ListPage, ObjectInfo, StoreError, StoreResult};

impl SdkStore {
    pub(super) async fn list_v2(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: u32,
    ) -> StoreResult<ListPage> {
        let out = self
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(start.map(str::to_string))
            .max_keys(max_keys as i32)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let truncated = out.is_truncated() == Some(true);
        if truncated && out.next_continuation_token().is_none() {
            // A v1-shaped answer: the server ignored `list-type=2`.
            return Err(StoreError::NotImplemented("ListObjectsV2".into()));
        }
        Ok(ListPage {
            objects: out.contents().iter().filter_map(object_info).collect(),
            prefixes: prefixes(out.common_prefixes()),
            next: truncated
                .then(|| out.next_continuation_token().map(str::to_string))
                .flatten(),
        })
    }

    /// ListObjects v1: the token is a marker. `NextMarker` comes only with a delimiter; without
    /// it the last key (or common prefix) returned is the marker.
    pub(super) async fn list_v1(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start: Option<&str>,
        max_keys: u32,
    ) -> StoreResult<ListPage> {
        let out = self
            .client()
            .list_objects()
            .bucket(&self.bucket)
            .set_request_payer(self.payer())
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_marker(start.map(str::to_string))
            .max_keys(max_keys as i32)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let objects: Vec<ObjectInfo> = out.contents().iter().filter_map(object_info).collect();
        let prefixes = prefixes(out.common_prefixes());
        let next = if out.is_truncated() == Some(true) {
            out.next_marker().map(str::to_string).or_else(|| {
                let last_key = objects.last().map(|o| o.key.clone());
                last_key.max(prefixes.last().cloned())
            })
        } else {
            None
        };
        Ok(ListPage {
            objects,
            prefixes,
            next,
        })
    }
}

pub(super) fn object_info(o: &aws_sdk_s3::types::Object) -> Option<ObjectInfo> {
    Some(ObjectInfo {
        key: o.key()?.to_string(),
        size: o.size().unwrap_or(0).max(0) as u64,
        etag: o.e_tag().map(str::to_string),
        last_modified: to_system_time(o.last_modified()),
        content_type: None,
        metadata: Default::default(),
    })
}

pub(super) fn prefixes(p: &[aws_sdk_s3::types::CommonPrefix]) -> Vec<String> {
    p.iter()
        .filter_map(|p| p.prefix().map(str::to_string))
        .collect()
}
