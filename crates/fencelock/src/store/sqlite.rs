//! placeholder (replaced by the memory store)
use super::*;
#[derive(Debug)]
pub(crate) struct SqliteStore;
impl SqliteStore {
    pub(crate) fn open(_p: &std::path::Path, _o: &url::StoreOptions) -> Result<Self, Error> {
        Ok(SqliteStore)
    }
}
impl Store for SqliteStore {
    fn name(&self) -> &str {
        "sqlite://"
    }
    fn acquire(&self, _: &LockSpec) -> StoreFuture<Acquired> {
        todo!()
    }
    fn commit_fence(&self, _: &LockSpec, _: u64) -> StoreFuture<bool> {
        todo!()
    }
    fn extend(&self, _: &[LockSpec]) -> StoreFuture<Vec<Holding>> {
        todo!()
    }
    fn release(&self, _: &LockSpec) -> StoreFuture<Holding> {
        todo!()
    }
    fn abandon(&self, _: &LockSpec) -> StoreFuture<()> {
        todo!()
    }
    fn inspect(&self, _: &str) -> StoreFuture<KeyInfo> {
        todo!()
    }
    fn watch(&self, _: &str) -> StoreFuture<Option<Watch>> {
        todo!()
    }
}
