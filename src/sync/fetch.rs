//! A refetch: the dealer list, then every branch-data entry,
//! `carat.concurrency` requests at a time, in one session that is renewed
//! when Carat kills its NIT. Every answer must carry the dealer list's hash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;

use super::record::{Run, RunStats};
use super::{FetchError, Progress, Syncer};
use crate::carat::compat::OthersTarget;
use crate::carat::{CaratError, ErrorClass, Session};
use crate::catalog::{
    BranchData, BranchDataAnswer, BranchKey, Catalog, Dealer, DealerCode, GeneralHash, RechargeType,
};
use crate::mutex::lock;

/// Fresh sessions allowed in one run after dead NITs.
const MAX_RENEWALS: u32 = 5;

/// The session the fetches share; replaced when Carat kills the NIT.
struct SharedSession {
    current: Mutex<Session>,
    renewal: tokio::sync::Mutex<()>,
}

/// One branch-data request of a refetch.
#[derive(Clone)]
struct Fetch {
    dealer: DealerCode,
    key: BranchKey,
    /// The dealer's `type_code` (the `others` request names it).
    type_code: Option<String>,
}

impl Syncer {
    /// The whole catalog, validated, in the session begin opened. `gate`
    /// is what a renewed session sends begin.
    pub(super) async fn fetch_catalog(
        &self,
        run: &Run<'_>,
        session: Session,
        gate: &GeneralHash,
        progress: &dyn Progress,
    ) -> Result<Catalog, FetchError> {
        let (rt, stats) = (run.rt, &run.stats);
        let shared = SharedSession {
            current: Mutex::new(session),
            renewal: tokio::sync::Mutex::new(()),
        };
        // Refetch calls ask for everything (inferred: the zero hash).
        let zero = GeneralHash::zero();
        let dealers = self
            .with_session(&shared, rt, gate, stats, |s| {
                let zero = zero.clone();
                async move { self.client.dealers(&s, &zero).await }
            })
            .await?;
        // The gate kept is what begin answered for the session that listed
        // the dealers (a dead NIT may have renewed it since the first begin).
        let begin_hash = lock(&shared.current).general_hash.clone();
        *lock(&stats.begin_hash) = Some(begin_hash.clone());
        // The dealer list's hash is the version; the data answers must agree.
        let hash = dealers.hash.clone();
        if hash != begin_hash && !stats.begin_mismatch.swap(true, Ordering::Relaxed) {
            tracing::warn!(recharge_type = %rt, begin_hash = %begin_hash, data_hash = %hash,
                "Carat's begin answer carries another hash than its data answers; committing under the data's \
                 hash and gating the next check on begin's");
        }
        stats.add_warnings(dealers.warnings);
        // A list that can never make a catalog fails before the fan-out.
        crate::catalog::validate_dealers(&dealers.dealers).map_err(FetchError::Invalid)?;
        let fetches = self.fetches(rt, &dealers.dealers);
        let branch_data = self
            .fan_out(run, &shared, gate, &hash, &fetches, progress)
            .await?;
        let catalog = Catalog {
            recharge_type: rt,
            general_hash: hash,
            dealers: dealers.dealers,
            questions: dealers.questions,
            branch_data,
        };
        let expected: BTreeSet<_> = fetches.into_iter().map(|f| (f.dealer, f.key)).collect();
        catalog.validate(&expected).map_err(FetchError::Invalid)?;
        Ok(catalog)
    }

    /// Every branch-data request, `carat.concurrency` at a time; each answer
    /// must carry the dealer list's `hash`. The first failure drops the
    /// stream, cancelling what is in flight.
    async fn fan_out(
        &self,
        run: &Run<'_>,
        shared: &SharedSession,
        gate: &GeneralHash,
        hash: &GeneralHash,
        fetches: &[Fetch],
        progress: &dyn Progress,
    ) -> Result<BTreeMap<(DealerCode, BranchKey), BranchData>, FetchError> {
        let (rt, stats) = (run.rt, &run.stats);
        let total = fetches.len();
        progress.progress(rt, 0, total);
        let done = AtomicUsize::new(0);
        let zero = GeneralHash::zero();
        let mut stream = futures_util::stream::iter(fetches.iter().cloned())
            .map(|f| {
                let (zero, done) = (&zero, &done);
                async move {
                    let answer: BranchDataAnswer = self
                        .with_session(shared, rt, gate, stats, |s| {
                            let (f, zero) = (f.clone(), zero.clone());
                            async move { self.branch_data(&s, &f, &zero).await }
                        })
                        .await?;
                    if &answer.hash != hash {
                        return Err(FetchError::HashMoved(answer.hash));
                    }
                    stats.add_warnings(answer.warnings);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress.progress(rt, n, total);
                    Ok(((f.dealer, f.key), answer.data))
                }
            })
            .buffer_unordered(self.concurrency.max(1));
        let mut branch_data = BTreeMap::new();
        while let Some(r) = stream.next().await {
            let (k, v) = r?;
            branch_data.insert(k, v);
        }
        Ok(branch_data)
    }

    /// The branch-data requests of a refetch: every dealer × configured DDD
    /// for `normal`, every dealer × branch for `others`, none for `invoice`
    /// (its branch data needs the customer's answers: not cacheable).
    fn fetches(&self, rt: RechargeType, dealers: &[Dealer]) -> Vec<Fetch> {
        let mut out = vec![];
        for d in dealers {
            let keys: Vec<BranchKey> = match rt {
                RechargeType::Normal => self.sync.ddds.iter().cloned().map(BranchKey::Ddd).collect(),
                RechargeType::Others => d
                    .branches
                    .iter()
                    .map(|b| BranchKey::Branch(b.code.clone()))
                    .collect(),
                RechargeType::Invoice => vec![],
            };
            out.extend(keys.into_iter().map(|key| Fetch {
                dealer: d.code.clone(),
                key,
                type_code: d.type_code.clone(),
            }));
        }
        out
    }

    async fn branch_data(
        &self,
        s: &Session,
        f: &Fetch,
        zero: &GeneralHash,
    ) -> Result<BranchDataAnswer, CaratError> {
        match &f.key {
            BranchKey::Ddd(ddd) => self.client.branch_data_normal(s, &f.dealer, ddd, zero).await,
            BranchKey::Branch(b) => {
                let target = OthersTarget {
                    dealer: &f.dealer,
                    type_code: f.type_code.as_deref(),
                    branch: b,
                };
                self.client.branch_data_others(s, target, zero).await
            }
        }
    }

    /// Runs `call` with the shared session; a dead NIT opens a fresh session
    /// (sending the same gate) and the call is tried again. A fresh session
    /// is not compared with the first: whether the table moved meanwhile is
    /// what the data answers' hashes say.
    async fn with_session<T, F, Fut>(
        &self,
        shared: &SharedSession,
        rt: RechargeType,
        gate: &GeneralHash,
        stats: &RunStats,
        call: F,
    ) -> Result<T, FetchError>
    where
        F: Fn(Session) -> Fut,
        Fut: std::future::Future<Output = Result<T, CaratError>>,
    {
        loop {
            let session = lock(&shared.current).clone();
            match self.retrying(stats, || call(session.clone())).await {
                Err(e) if e.class() == ErrorClass::NitRejected => {
                    let _renewing = shared.renewal.lock().await;
                    // Another request may have renewed it while this one waited.
                    if lock(&shared.current).nit == session.nit {
                        if stats.renewals.load(Ordering::Relaxed) >= MAX_RENEWALS {
                            return Err(e.into());
                        }
                        stats.renewals.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(recharge_type = %rt, error = %e, "Carat rejected the NIT; opening a fresh session");
                        let fresh = self.begin(rt, gate, stats).await?;
                        *lock(&shared.current) = fresh;
                    }
                }
                other => return other.map_err(FetchError::from),
            }
        }
    }
}
