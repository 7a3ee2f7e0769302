//! The pipeline behind the one zip writer: work is listed in chunks on one thread, each chunk
//! is read, hashed and deflated on a worker thread (one per core), and the results are handed
//! to the writer in the order they were listed, on the caller's thread — so listing, deflating
//! and writing overlap, and every core deflates while the zip is being written.
//!
//! The output does not depend on the number of workers: each entry is deflated alone from a
//! reset [`super::Deflater`], and the writer sees the entries in listing order, so an archive or
//! a bundle is byte for byte the same whether one or many threads made it.
//!
//! Memory is bounded: at most [`in_flight`] chunks exist at once (listed, being deflated, or
//! waiting for the writer); the lister waits for the writer to take a chunk before it lists
//! another. A chunk of 256 usage files of 1 KiB is well under 1 MiB, so the pipeline holds a
//! few MiB whatever the number of files.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Mutex;

/// Threads that deflate: one per core this process may use.
pub fn deflate_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Chunks that may exist at once with `workers` deflating threads: two each (one being
/// deflated, one waiting) and two for the writer (one being written, one ready).
pub fn in_flight(workers: usize) -> usize {
    2 * workers + 2
}

/// What the lister and the workers hand the writer, by chunk number.
enum Handed<R, E> {
    Chunk(Vec<R>),
    Failed(E),
    End,
}

/// The stages of one run; see the module doc.
pub struct Ordered<N, S, W, P> {
    /// Lists the next chunk of work (`None` at the end); runs on its own thread.
    pub next: N,
    /// Makes the per-thread state of a worker (a `Deflater`).
    pub init: S,
    /// Does the work of one item on a worker thread.
    pub work: W,
    /// The result of an item whose work panicked (there should be none): it is left for a
    /// later run instead of stopping this one.
    pub on_panic: P,
}

impl<N, S, W, P> Ordered<N, S, W, P> {
    /// Runs the pipeline with `workers` threads (1: everything on the caller's thread, in
    /// turn), handing each chunk's results to `sink` in listing order. Stops at the first
    /// error of `next` or `sink` (the threads are stopped and joined before it returns);
    /// `lost` makes the error for a chunk that never came back, which only a worker thread
    /// dying outside its items could cause.
    pub fn run<I, R, St, E>(
        self,
        workers: usize,
        mut sink: impl FnMut(Vec<R>) -> Result<(), E>,
        lost: impl FnOnce() -> E,
    ) -> Result<(), E>
    where
        N: FnMut() -> Result<Option<Vec<I>>, E> + Send,
        S: Fn() -> St + Sync,
        W: Fn(&mut St, I) -> R + Sync,
        P: Fn() -> R + Sync,
        I: Send,
        R: Send,
        E: Send,
    {
        let Ordered {
            mut next,
            init,
            work,
            on_panic,
        } = self;
        if workers < 2 {
            let mut state = None;
            while let Some(chunk) = next()? {
                sink(do_chunk(&init, &work, &on_panic, &mut state, chunk))?;
            }
            return Ok(());
        }
        let depth = in_flight(workers);
        let (free_tx, free_rx) = mpsc::sync_channel::<()>(depth);
        for _ in 0..depth {
            let _ = free_tx.send(());
        }
        let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<I>)>(depth);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<(u64, Handed<R, E>)>();
        let (init, work, on_panic, work_rx) = (&init, &work, &on_panic, &work_rx);
        std::thread::scope(|s| {
            let lister_done = done_tx.clone();
            s.spawn(move || {
                let mut seq = 0u64;
                // One free slot per chunk: the writer gives one back for each chunk it took.
                while free_rx.recv().is_ok() {
                    let handed = match next() {
                        Ok(Some(chunk)) => {
                            if work_tx.send((seq, chunk)).is_err() {
                                return;
                            }
                            seq += 1;
                            continue;
                        }
                        Ok(None) => Handed::End,
                        Err(e) => Handed::Failed(e),
                    };
                    let _ = lister_done.send((seq, handed));
                    return;
                }
            });
            for _ in 0..workers {
                let done = done_tx.clone();
                s.spawn(move || {
                    let mut state = None;
                    loop {
                        let job = match work_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, chunk)) = job else { return };
                        let out = do_chunk(init, work, on_panic, &mut state, chunk);
                        if done.send((seq, Handed::Chunk(out))).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            // The writer: chunks in listing order; later ones wait in `early` (at most
            // `depth` of them, since no more exist at once).
            let mut early = BTreeMap::new();
            let mut want = 0u64;
            let result = loop {
                let handed = match early.remove(&want) {
                    Some(h) => h,
                    None => match done_rx.recv() {
                        Ok((seq, h)) if seq == want => h,
                        Ok((seq, h)) => {
                            early.insert(seq, h);
                            continue;
                        }
                        Err(_) => break Err(lost()),
                    },
                };
                match handed {
                    Handed::Chunk(out) => {
                        want += 1;
                        if let Err(e) = sink(out) {
                            break Err(e);
                        }
                        let _ = free_tx.send(());
                    }
                    Handed::Failed(e) => break Err(e),
                    Handed::End => break Ok(()),
                }
            };
            // Stops the lister (no free slot will come) and then the workers (no more work).
            drop(free_tx);
            drop(done_rx);
            result
        })
    }
}

/// The results of one chunk, in order; an item whose work panicked gets `on_panic()`, and
/// the thread's state is made afresh after it.
fn do_chunk<I, R, St>(
    init: &impl Fn() -> St,
    work: &impl Fn(&mut St, I) -> R,
    on_panic: &impl Fn() -> R,
    state: &mut Option<St>,
    chunk: Vec<I>,
) -> Vec<R> {
    let mut out = Vec::with_capacity(chunk.len());
    for item in chunk {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let s = state.get_or_insert_with(init);
            work(s, item)
        }));
        match r {
            Ok(r) => out.push(r),
            Err(_) => {
                *state = None;
                out.push(on_panic());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn numbers(total: u32, chunk: u32) -> impl FnMut() -> Result<Option<Vec<u32>>, String> + Send {
        let mut at = 0;
        move || {
            if at >= total {
                return Ok(None);
            }
            let end = (at + chunk).min(total);
            let v = (at..end).collect();
            at = end;
            Ok(Some(v))
        }
    }

    #[test]
    fn results_come_in_listing_order_whatever_the_number_of_workers() {
        for workers in [1, 2, 3, 8] {
            let mut got = Vec::new();
            Ordered {
                next: numbers(10_000, 7),
                init: || 0u64,
                work: |n: &mut u64, i: u32| {
                    *n += 1;
                    // Uneven work, so chunks finish out of order.
                    if i.is_multiple_of(97) {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    i * 2
                },
                on_panic: || u32::MAX,
            }
            .run(
                workers,
                |c: Vec<u32>| {
                    got.extend(c);
                    Ok::<_, String>(())
                },
                || "lost".to_string(),
            )
            .unwrap();
            assert_eq!(
                got,
                (0..10_000).map(|i| i * 2).collect::<Vec<_>>(),
                "{workers}"
            );
        }
    }

    #[test]
    fn no_more_chunks_than_in_flight_exist_at_once() {
        let listed = AtomicUsize::new(0);
        let mut taken = 0usize;
        let mut most = 0usize;
        let mut next = numbers(5_000, 10);
        Ordered {
            next: || {
                let c = next()?;
                if c.is_some() {
                    listed.fetch_add(1, Ordering::SeqCst);
                }
                Ok(c)
            },
            init: || (),
            work: |_: &mut (), i: u32| i,
            on_panic: || 0,
        }
        .run(
            2,
            |_c: Vec<u32>| {
                // A slow writer: the lister must wait for it.
                std::thread::sleep(std::time::Duration::from_micros(300));
                taken += 1;
                most = most.max(listed.load(Ordering::SeqCst) - taken + 1);
                Ok::<_, String>(())
            },
            || "lost".to_string(),
        )
        .unwrap();
        assert_eq!(taken, 500);
        assert!(most <= in_flight(2), "{most} chunks at once");
    }

    #[test]
    fn an_error_stops_the_run_and_a_panic_is_one_item() {
        let err = Ordered {
            next: numbers(1_000, 10),
            init: || (),
            work: |_: &mut (), i: u32| {
                if i == 55 {
                    panic!("a bug");
                }
                i
            },
            on_panic: || u32::MAX,
        }
        .run(
            2,
            |c: Vec<u32>| {
                if c.contains(&u32::MAX) {
                    assert_eq!(c[5], u32::MAX, "only the item that panicked");
                    return Err("stopped at the panicked item".to_string());
                }
                Ok(())
            },
            || "lost".to_string(),
        )
        .unwrap_err();
        assert_eq!(err, "stopped at the panicked item");
        let mut n = 0;
        let mut next = numbers(1_000, 10);
        let err = Ordered {
            next: || {
                n += 1;
                if n == 30 {
                    return Err("cannot list".to_string());
                }
                next()
            },
            init: || (),
            work: |_: &mut (), i: u32| i,
            on_panic: || 0,
        }
        .run(2, |_c: Vec<u32>| Ok(()), || "lost".to_string())
        .unwrap_err();
        assert_eq!(err, "cannot list");
    }
}
