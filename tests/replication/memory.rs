//! Memory while capturing: a 200k-row transaction streams through in
//! bounded memory, measured by a counting allocator (this file's
//! `#[global_allocator]`, for the whole test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use walhook::source::replication::{ReplicationOptions, ReplicationSource};
use walhook::source::{Ack, Source};

use super::{config, finish, index, next_batch, setup};

/// Counts the bytes live on the current thread: a `#[tokio::test]` runs
/// its whole runtime (source, stream task, connections) on its thread, so
/// this measures what capturing holds, unaffected by tests running beside it.
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn account(delta: i64) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counting touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            account(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        account(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            account(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test]
async fn a_200k_row_transaction_streams_in_bounded_memory() {
    const ROWS: usize = 200_000;
    let (db, client) = setup(
        "CREATE TABLE big (id int PRIMARY KEY, payload text)",
        "public.big",
    )
    .await;
    let config = config(&db);
    let mut source =
        ReplicationSource::connect_with(&db.url, &config, ReplicationOptions::default())
            .await
            .expect("connect");
    client
        .batch_execute(&format!(
            "INSERT INTO big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, {ROWS}) i"
        ))
        .await
        .expect("big transaction");

    let baseline = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(baseline));
    let started = std::time::Instant::now();
    let mut seen = 0usize;
    let mut next_index = 0u32;
    let mut commit_lsn = None;
    while seen < ROWS {
        let batch = next_batch(&mut source).await;
        for change in &batch.changes {
            assert_eq!(index(change), next_index, "changes arrive in order");
            next_index += 1;
            commit_lsn = change.commit_lsn;
        }
        seen += batch.changes.len();
        let Ack::ConfirmLsn(lsn) = batch.ack else {
            panic!("a replication ack")
        };
        if seen < ROWS {
            assert!(
                Some(lsn) < commit_lsn,
                "a partial transaction is never confirmed"
            );
        }
        source.committed(&batch.ack).await.expect("confirm");
    }
    let peak = PEAK.with(Cell::get) - baseline;
    let elapsed = started.elapsed();
    println!(
        "{ROWS} rows (about {} MB as events) streamed in {elapsed:?}; capture held at most {:.1} MB more than before",
        ROWS * 400 / 1_000_000,
        peak as f64 / 1e6
    );
    assert_eq!(seen, ROWS);
    // Holding the transaction would take well over 100 MB.
    assert!(peak < 32_000_000, "peak {peak} bytes");
    finish(source, &client).await;
}
