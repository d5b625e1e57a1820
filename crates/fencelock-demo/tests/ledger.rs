//! The fenced ledger on both of its backends — a real SQLite file and a real
//! `redis-server` — with the same sequence of accesses: fenced reads raise the fence,
//! a stale holder's read and write are refused whole, plain accesses ignore fences.

use fencelock::FencingToken;
use fencelock_demo::ledger::{ErrorKind, Ledger, LedgerSpec, Read, Written};
use fencelock_testkit::Cluster;

fn t(n: u64) -> Option<FencingToken> {
    Some(FencingToken::new(n))
}

async fn fenced_reads_raise_the_fence(spec: &LedgerSpec) {
    let ledger = Ledger::create(spec, 4, 100).await.expect("create");
    assert_eq!(
        ledger.read(0, 1, t(5)).await.unwrap(),
        Read::Balances(100, 100)
    );
    // A newer holder reads accounts 2 and 1, and has not written yet.
    assert_eq!(
        ledger.read(2, 1, t(7)).await.unwrap(),
        Read::Balances(100, 100)
    );
    // The stale holder's write lands between that read and its write: refused whole
    // (account 0 untouched), because the read raised account 1's fence.
    assert_eq!(
        ledger.write((0, 90), (1, 110), t(5)).await.unwrap(),
        Written::Refused
    );
    // Its next read is refused too.
    assert_eq!(ledger.read(0, 1, t(5)).await.unwrap(), Read::Refused);
    // A read refused on one account raises no fence on the other: account 0 stays
    // at 5 after token 6 was refused on account 2, so token 5 may still read it.
    assert_eq!(ledger.read(0, 2, t(6)).await.unwrap(), Read::Refused);
    assert_eq!(
        ledger.read(0, 3, t(5)).await.unwrap(),
        Read::Balances(100, 100)
    );
    assert_eq!(
        ledger.read(0, 1, t(7)).await.unwrap(),
        Read::Balances(100, 100)
    );
    assert_eq!(
        ledger.write((2, 95), (1, 105), t(7)).await.unwrap(),
        Written::Applied
    );
    // Equal tokens pass: one holder reads and writes several times.
    assert_eq!(
        ledger.write((2, 90), (1, 110), t(7)).await.unwrap(),
        Written::Applied
    );
    assert_eq!(ledger.balances(4).await.unwrap(), vec![100, 110, 90, 100]);
    // Plain accesses ignore the fences.
    assert_eq!(
        ledger.read(0, 1, None).await.unwrap(),
        Read::Balances(100, 110)
    );
    assert_eq!(
        ledger.write((0, 99), (1, 111), None).await.unwrap(),
        Written::Applied
    );
    assert_eq!(ledger.balances(4).await.unwrap(), vec![99, 111, 90, 100]);
}

#[tokio::test]
async fn sqlite_ledger_fences_reads_and_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = LedgerSpec::Sqlite {
        path: dir.path().join("ledger.db"),
    };
    fenced_reads_raise_the_fence(&spec).await;
    // A missing account is an error, never a fencing success.
    let ledger = Ledger::open(&spec).await.expect("open");
    for result in [
        ledger.read(0, 9, t(8)).await.map(|_| ()),
        ledger.write((9, 1), (0, 1), t(8)).await.map(|_| ()),
        ledger.write((9, 1), (0, 1), None).await.map(|_| ()),
    ] {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Other);
    }
}

#[tokio::test]
async fn redis_ledger_fences_reads_and_writes() {
    let node = Cluster::start(1);
    let spec = LedgerSpec::Redis {
        url: node.urls()[0].clone(),
        prefix: "test:".into(),
    };
    fenced_reads_raise_the_fence(&spec).await;
    let ledger = Ledger::open(&spec).await.expect("open");
    assert_eq!(
        ledger.read(0, 9, t(8)).await.unwrap_err().kind(),
        ErrorKind::Other
    );
}

/// The ledger's fence rule is the library's: over the same tokens, a fenced write to
/// the ledger is accepted exactly when `fencelock::fence::REDIS_FENCED_SET` accepts
/// it (a lower token refused, an equal one accepted).
#[tokio::test]
async fn redis_ledger_follows_the_librarys_fence_rule() {
    let node = Cluster::start(1);
    let url = node.urls()[0].clone();
    let spec = LedgerSpec::Redis {
        url: url.clone(),
        prefix: "rule:".into(),
    };
    let ledger = Ledger::create(&spec, 2, 0).await.expect("create");
    let client = redis::Client::open(url).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let library = redis::Script::new(fencelock::fence::REDIS_FENCED_SET);
    for (i, token) in [5_u64, 5, 4, 7, 6, 7, 9, 8].into_iter().enumerate() {
        let by_library: i64 = library
            .key("lib:data")
            .key("lib:fence")
            .arg(i)
            .arg(token)
            .invoke_async(&mut con)
            .await
            .expect("library script");
        let by_ledger = ledger
            .write((0, i as i64), (1, i as i64), t(token))
            .await
            .expect("ledger write");
        assert_eq!(
            by_ledger == Written::Applied,
            by_library == 1,
            "token {token} (step {i})"
        );
    }
}
