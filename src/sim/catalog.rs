//! The simulator's catalog: what it serves, per recharge type, in Carat's
//! wire shapes. Loaded from a JSON file or generated at any size
//! (N dealers × M DDDs × K ranges); `bump` makes a new version with a new
//! hash. Owns no I/O but reading the file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use serde::{Deserialize, Serialize};

use crate::carat::wire;
use crate::catalog::ALL_DDDS;

/// Branch data of one (dealer, DDD) or (dealer, branch).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimBranchData {
    #[serde(default)]
    pub messages: Vec<String>,
    #[serde(default)]
    pub questions: Vec<wire::Question>,
    #[serde(default)]
    pub categories: Vec<wire::Category>,
}

/// One recharge type's table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimTypeCatalog {
    /// Served as-is when set; computed from the content otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub general_hash: Option<String>,
    /// Bumped by `bump`; part of the computed hash.
    #[serde(default)]
    pub version: u64,
    pub dealers: Vec<wire::Dealer>,
    #[serde(default)]
    pub questions: Vec<wire::Question>,
    /// `normal`: dealer code → DDD → branch data.
    #[serde(default)]
    pub ddd_data: BTreeMap<String, BTreeMap<String, SimBranchData>>,
    /// `others`: dealer code → branch code → branch data.
    #[serde(default)]
    pub branch_data: BTreeMap<String, BTreeMap<String, SimBranchData>>,
}

impl SimTypeCatalog {
    /// The hash served: the explicit one, or FNV-1a over the content.
    pub fn hash(&self) -> String {
        if let Some(h) = &self.general_hash {
            return h.clone();
        }
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016X}")
    }
}

/// Sizes of a generated catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenSpec {
    pub dealers: usize,
    pub ddds: usize,
    pub ranges: usize,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            dealers: 4,
            ddds: 67,
            ranges: 3,
        }
    }
}

/// The whole simulated table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimCatalog {
    /// `normal`, `others`, `invoice`.
    pub types: BTreeMap<String, SimTypeCatalog>,
    /// Set when generated: `bump` regenerates with new amounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<GenSpec>,
    /// The hash of each type, computed once per change (hashing serialises
    /// the whole table, far too slow to do per request).
    #[serde(skip)]
    hashes: BTreeMap<String, String>,
}

const SEED_NAMES: [&str; 4] = ["Vivo", "Claro", "Oi", "Tim"];

fn s(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn normal_branch_data(dealer: usize, ddd: usize, ranges: usize, version: u64) -> SimBranchData {
    let v = version as usize;
    let amount_ranges = (0..ranges)
        .map(|k| {
            let min = 500 * (k + 1) + 100 * (v % 7);
            let max = min + 5_000 * (k + 1) + 10 * ((dealer + ddd) % 10);
            let with_bonus = k % 2 == 0;
            wire::AmountRange {
                amount_key: s(k + 1),
                min_amount: s(min),
                max_amount: s(max),
                extras: wire::Extras {
                    message: if with_bonus {
                        s(format!("MSG_FAIXA_{}", k + 1))
                    } else {
                        None
                    },
                    bonus: if with_bonus { s(50 * (k + 1)) } else { None },
                    bonus_in_percentage: if with_bonus { s(100) } else { None },
                    payment_amount: if with_bonus { s(min + 200) } else { None },
                    bonus_category: if with_bonus { s(1) } else { None },
                    expiry_date: s(30),
                    bonus_expiry_date: if with_bonus { s(15) } else { None },
                },
            }
        })
        .collect();
    let fixed_amounts = [1000, 3000]
        .iter()
        .enumerate()
        .map(|(i, a)| wire::FixedAmount {
            amount_key: s(100 + i),
            amount: s(a + 10 * (v % 5)),
            extras: wire::Extras {
                expiry_date: s(30),
                ..Default::default()
            },
        })
        .collect();
    SimBranchData {
        messages: vec!["MENSAGEM DE TESTE".to_owned()],
        questions: vec![],
        categories: vec![wire::Category {
            code: s("01"),
            description: s("RECARGA"),
            amount_ranges: Some(amount_ranges),
            fixed_amounts: Some(fixed_amounts),
        }],
    }
}

fn generate_normal(spec: GenSpec, version: u64) -> SimTypeCatalog {
    let ddds: Vec<&str> = ALL_DDDS.iter().take(spec.ddds.min(67)).copied().collect();
    let mut t = SimTypeCatalog {
        version,
        ..Default::default()
    };
    for d in 0..spec.dealers.min(999) {
        let code = format!("{:03}", d + 1);
        let name = SEED_NAMES
            .get(d)
            .map(|n| n.to_string())
            .unwrap_or_else(|| format!("Operadora {code}"));
        t.dealers.push(wire::Dealer {
            code: s(&code),
            name: s(name),
            ..Default::default()
        });
        let per_ddd = ddds
            .iter()
            .enumerate()
            .map(|(i, ddd)| (ddd.to_string(), normal_branch_data(d, i, spec.ranges, version)))
            .collect();
        t.ddd_data.insert(code, per_ddd);
    }
    t
}

/// (code, name, type_code, type_name, [(branch code, branch name)])
type OthersRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The `others` table of the seed document (PIN, games, donation, insurance).
fn generate_others(version: u64) -> SimTypeCatalog {
    let rows: [OthersRow; 6] = [
        (
            "905",
            "Vex-PIN",
            "02",
            "PIN TELEFONE",
            &[("97200000000", "Vex-PIN")],
        ),
        (
            "902",
            "TIM-Leste-PIN",
            "02",
            "PIN TELEFONE",
            &[("97001000000", "TIM-Leste-PIN")],
        ),
        (
            "901",
            "E-Prepag",
            "03",
            "PIN GAMES",
            &[
                ("98000000000", "Brancaleone-Migux"),
                ("98001000000", "HABBO HOTEL-Habbo Hotel"),
                ("98006000000", "ONGAME-Metin2"),
            ],
        ),
        (
            "900",
            "Prepag",
            "03",
            "PIN GAMES",
            &[
                ("99000000000", "Level Up!"),
                ("99100000000", "OnGame"),
                ("99300000000", "Acclaim"),
            ],
        ),
        (
            "908",
            "Crianca Esperanca",
            "04",
            "DOACAO",
            &[("97299000000", "Crianca Esperanca")],
        ),
        (
            "909",
            "Sorte Mania",
            "05",
            "SEGURO",
            &[("97298000000", "Sorte Mania")],
        ),
    ];
    let mut t = SimTypeCatalog {
        version,
        ..Default::default()
    };
    for (i, (code, name, tc, tn, branches)) in rows.iter().enumerate() {
        t.dealers.push(wire::Dealer {
            code: s(code),
            name: s(name),
            branches: Some(
                branches
                    .iter()
                    .map(|(c, n)| wire::Branch {
                        code: s(c),
                        name: s(n),
                    })
                    .collect(),
            ),
            type_code: s(tc),
            type_name: s(tn),
        });
        let mut per_branch = BTreeMap::new();
        for (j, (bc, _)) in branches.iter().enumerate() {
            let fixed = (0..3)
                .map(|k| wire::FixedAmount {
                    amount_key: s(format!("{}{}", j + 1, k + 1)),
                    amount: s(1000 * (k + 1) * (i + 1) + 10 * (version as usize % 9)),
                    extras: wire::Extras {
                        message: if k == 0 { s("VALOR PROMOCIONAL") } else { None },
                        ..Default::default()
                    },
                })
                .collect();
            per_branch.insert(
                bc.to_string(),
                SimBranchData {
                    messages: vec![],
                    questions: vec![],
                    categories: vec![wire::Category {
                        code: s("01"),
                        description: s(tn),
                        amount_ranges: Some(vec![]),
                        fixed_amounts: Some(fixed),
                    }],
                },
            );
        }
        t.branch_data.insert(code.to_string(), per_branch);
    }
    t
}

/// The `invoice` table of the seed document: dealers, branches, questions.
fn generate_invoice(version: u64) -> SimTypeCatalog {
    SimTypeCatalog {
        version,
        dealers: vec![wire::Dealer {
            code: s("800"),
            name: s("Vivo SP Pos"),
            branches: Some(vec![wire::Branch {
                code: s("80019000000"),
                name: s("Vivo SP Pos"),
            }]),
            ..Default::default()
        }],
        questions: vec![wire::Question {
            id: s("LPERG:126"),
            display: s("Identificação do cliente ou Número de contrato"),
            rule: s("0"),
            min: s("1"),
            max: s("11"),
            kind: s("N"),
            ..Default::default()
        }],
        ..Default::default()
    }
}

impl SimCatalog {
    /// A generated catalog: `spec` sizes the `normal` table; `others` and
    /// `invoice` follow the seed documents.
    pub fn generate(spec: GenSpec) -> SimCatalog {
        let mut types = BTreeMap::new();
        types.insert("normal".to_owned(), generate_normal(spec, 0));
        types.insert("others".to_owned(), generate_others(0));
        types.insert("invoice".to_owned(), generate_invoice(0));
        let mut c = SimCatalog {
            types,
            generated: Some(spec),
            hashes: BTreeMap::new(),
        };
        c.refresh_hashes();
        c
    }

    /// A catalog from a JSON file (`--catalog`).
    pub fn from_file(path: &Path) -> anyhow::Result<SimCatalog> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn from_json(bytes: &[u8]) -> Result<SimCatalog, String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let mut c: SimCatalog =
            serde_path_to_error::deserialize(&mut de).map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        de.end().map_err(|e| e.to_string())?;
        c.refresh_hashes();
        Ok(c)
    }

    /// Recomputes the cached hashes; call after changing `types` directly.
    pub fn refresh_hashes(&mut self) {
        self.hashes = self.types.iter().map(|(k, t)| (k.clone(), t.hash())).collect();
    }

    /// The hash served for `rt`.
    pub fn hash_of(&self, rt: &str) -> Option<String> {
        match self.hashes.get(rt) {
            Some(h) => Some(h.clone()),
            None => self.types.get(rt).map(|t| t.hash()),
        }
    }

    /// A new version of `rt`: new amounts when generated, and a new hash.
    pub fn bump(&mut self, rt: &str) -> Option<String> {
        let generated = self.generated;
        let t = self.types.get_mut(rt)?;
        let version = t.version + 1;
        match (generated, rt) {
            (Some(spec), "normal") => *t = generate_normal(spec, version),
            (Some(_), "others") => *t = generate_others(version),
            (Some(_), "invoice") => *t = generate_invoice(version),
            _ => {
                t.version = version;
                t.general_hash = None;
            }
        }
        let h = t.hash();
        self.hashes.insert(rt.to_owned(), h.clone());
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_changes_hash_and_data() {
        let mut c = SimCatalog::generate(GenSpec {
            dealers: 2,
            ddds: 3,
            ranges: 2,
        });
        let before = c.types["normal"].clone();
        let h1 = before.hash();
        let h2 = c.bump("normal").unwrap();
        assert_ne!(h1, h2);
        assert_eq!(h2.len(), 16);
        assert_ne!(before.ddd_data, c.types["normal"].ddd_data);
        assert_eq!(c.types["normal"].dealers.len(), 2);
        assert_eq!(c.types["normal"].ddd_data["001"].len(), 3);
    }
}
