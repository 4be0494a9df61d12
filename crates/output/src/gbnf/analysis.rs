//! Which parts of a GBNF grammar become llguidance lexemes (see the module docs of
//! [`super`]): the largest regular parts for which greedy lexing cannot change what the grammar
//! accepts, and single characters elsewhere.
//!
//! llguidance's lexer, at a position where lexemes `S` are allowed, reads on while any lexeme
//! of `S` can go on. Say the right parse ends lexeme `Z` after text `w` and the next character
//! is `c`. The lexer goes wrong only if some lexeme `X` allowed where `Z` started has `w c` as
//! a prefix of one of its words. A lexeme of one character never has, so only lexemes that can
//! be longer (`X`) are checked: for every `Z` allowed where `X` is, the characters that may
//! follow `Z` must not be characters `X` can read after its first one (after an accepting
//! point, when `Z` and `X` are the same language). What fails is split into smaller lexemes
//! until nothing fails (single characters always pass).

use super::charset::CharSet;
use super::parse::{Grammar, Id, Kind};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Past this many automaton positions or states a part is not analysed (and not made a lexeme
/// where anything may follow it).
const MAX_POSITIONS: usize = 4096;
const MAX_STATES: usize = 2048;
/// Bounded repetitions up to this count are unrolled exactly; larger ones are analysed as `x*`
/// or `x+` (a larger language, so the check stays on the safe side).
const MAX_UNROLL: u32 = 16;
/// At most this many sets of lexemes allowed together are checked.
const MAX_GROUPS: usize = 20_000;

/// The lexemes chosen for a grammar.
#[derive(Debug, Clone)]
pub(super) struct Lexemes {
    /// Nodes written as one lexeme where they appear in a Lark rule.
    pub lexemes: HashSet<Id>,
    /// Rules written as Lark rules (lowercase).
    pub rule_level: Vec<bool>,
}

/// What the check needs to know about a lexeme's language.
#[derive(Debug, Clone)]
struct LangInfo {
    first: CharSet,
    /// Characters read after the first one.
    inner: CharSet,
    /// Characters that can continue a complete word.
    cont: CharSet,
    /// Some words are longer than one character.
    multi: bool,
    nullable: bool,
}

impl Lexemes {
    pub(super) fn choose(g: &Grammar) -> Lexemes {
        let regular = regular_rules(g);
        let mut blocked: HashSet<Id> = HashSet::new();
        let mut infos: HashMap<Id, LangInfo> = HashMap::new();
        loop {
            let layout = Layout::walk(g, &regular, &blocked);
            let bad = layout.violations(g, &mut infos);
            if bad.is_empty() {
                return Lexemes {
                    lexemes: layout.lexemes,
                    rule_level: layout.rule_level,
                };
            }
            blocked.extend(bad);
        }
    }
}

/// Rules from which no cycle of rule references can be reached: their language is regular.
fn regular_rules(g: &Grammar) -> Vec<bool> {
    let refs: Vec<Vec<usize>> = g.rules.iter().map(|r| refs_in(g, r.body)).collect();
    (0..g.rules.len()).map(|r| acyclic_from(r, &refs)).collect()
}

fn refs_in(g: &Grammar, id: Id) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack = vec![id];
    while let Some(n) = stack.pop() {
        match g.kind(n) {
            Kind::Char { .. } => {}
            Kind::Seq { items, .. } | Kind::Alt(items) => stack.extend(items),
            Kind::Rep { item, .. } => stack.push(*item),
            Kind::Ref(r) => out.push(*r),
        }
    }
    out
}

fn acyclic_from(start: usize, refs: &[Vec<usize>]) -> bool {
    // 0: unseen, 1: on the current path, 2: done.
    let mut color = vec![0u8; refs.len()];
    let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
    color[start] = 1;
    while let Some(&mut (r, ref mut next)) = stack.last_mut() {
        if let Some(&t) = refs[r].get(*next) {
            *next += 1;
            match color[t] {
                1 => return false,
                0 => {
                    color[t] = 1;
                    stack.push((t, 0));
                }
                _ => {}
            }
        } else {
            color[r] = 2;
            stack.pop();
        }
    }
    true
}

/// One choice of lexemes, with the lexeme-level first and follow sets of the Lark rules.
struct Layout {
    lexemes: HashSet<Id>,
    rule_level: Vec<bool>,
    /// Rule-level rules in the order reached.
    order: Vec<usize>,
}

impl Layout {
    fn walk(g: &Grammar, regular: &[bool], blocked: &HashSet<Id>) -> Layout {
        let mut l = Layout {
            lexemes: HashSet::new(),
            rule_level: vec![false; g.rules.len()],
            order: Vec::new(),
        };
        l.rule_level[g.root] = true;
        l.order.push(g.root);
        let mut i = 0;
        while i < l.order.len() {
            let body = g.rules[l.order[i]].body;
            l.visit(g, regular, blocked, body);
            i += 1;
        }
        l
    }

    fn visit(&mut self, g: &Grammar, regular: &[bool], blocked: &HashSet<Id>, n: Id) {
        let kind = g.kind(n);
        if matches!(kind, Kind::Char { .. })
            || (!blocked.contains(&n) && is_regular(g, regular, n) && !only_empty(g, n))
        {
            self.lexemes.insert(n);
            return;
        }
        match kind {
            Kind::Char { .. } => unreachable!("chars are lexemes"),
            Kind::Seq { items, .. } | Kind::Alt(items) => {
                for &c in items {
                    self.visit(g, regular, blocked, c);
                }
            }
            Kind::Rep { item, .. } => self.visit(g, regular, blocked, *item),
            Kind::Ref(r) => {
                if !self.rule_level[*r] {
                    self.rule_level[*r] = true;
                    self.order.push(*r);
                }
            }
        }
    }

    /// The lexemes that break greedy lexing (see the module docs).
    fn violations(&self, g: &Grammar, infos: &mut HashMap<Id, LangInfo>) -> Vec<Id> {
        for &x in &self.lexemes {
            let key = lang_key(g, x);
            infos.entry(key).or_insert_with(|| lang_info(g, key));
        }
        let info = |x: Id| &infos[&lang_key(g, x)];
        let mut lex: Vec<Id> = self.lexemes.iter().copied().collect();
        lex.sort_unstable();
        if lex.iter().all(|&x| !info(x).multi) {
            return Vec::new();
        }
        let sets = LexSets::compute(g, self, &info);
        let index: HashMap<Id, usize> = lex.iter().enumerate().map(|(i, &x)| (x, i)).collect();
        let bits = |ids: &BTreeSet<Id>| Bits::from_iter(lex.len(), ids.iter().map(|x| index[x]));
        let follow: Vec<Bits> = lex
            .iter()
            .map(|z| sets.follow.get(z).map_or(Bits::new(lex.len()), bits))
            .collect();
        let follow_chars: Vec<CharSet> = follow
            .iter()
            .map(|f| {
                let mut s = CharSet::default();
                f.ones().for_each(|b| _ = s.add(&info(lex[b]).first));
                s
            })
            .collect();
        let (shares, conflicts) = relations(g, &lex, &info, &follow_chars);
        match unsafe_lexemes(bits(&sets.start), &follow, &shares, &conflicts) {
            Some(bad) => bad.ones().map(|x| lex[x]).collect(),
            // Too many sets to check: split every longer lexeme (always right).
            None => lex.into_iter().filter(|&x| info(x).multi).collect(),
        }
    }
}

/// `shares[a]`: the lexemes sharing a first character with `a` (they may match the same
/// text); `conflicts[x]`: the lexemes `z` whose end `x` may run past when allowed together.
fn relations<'i>(
    g: &Grammar,
    lex: &[Id],
    info: &dyn Fn(Id) -> &'i LangInfo,
    follow_chars: &[CharSet],
) -> (Vec<Bits>, Vec<Bits>) {
    let mut shares = vec![Bits::new(lex.len()); lex.len()];
    let mut conflicts = vec![Bits::new(lex.len()); lex.len()];
    for (a, &x) in lex.iter().enumerate() {
        let ix = info(x);
        for (b, &z) in lex.iter().enumerate() {
            let share = info(z).first.intersects(&ix.first);
            if share {
                shares[a].set(b);
            }
            let conflict = ix.multi
                && if lang_key(g, z) == lang_key(g, x) {
                    follow_chars[b].intersects(&ix.cont)
                } else {
                    share && follow_chars[b].intersects(&ix.inner)
                };
            if conflict {
                conflicts[a].set(b);
            }
        }
    }
    (shares, conflicts)
}

/// The lexemes that conflict with another in some set of lexemes allowed together: where the
/// grammar starts (`start`), then, after text that lexemes of a set matched together (those
/// sharing first characters, taken transitively), what may follow any of them. `None` when
/// there are too many sets to check.
fn unsafe_lexemes(
    start: Bits,
    follow: &[Bits],
    shares: &[Bits],
    conflicts: &[Bits],
) -> Option<Bits> {
    let n = follow.len();
    let mut bad = Bits::new(n);
    let mut seen: HashSet<Bits> = HashSet::new();
    let mut todo = vec![start];
    while let Some(group) = todo.pop() {
        if seen.len() >= MAX_GROUPS {
            return None;
        }
        if !seen.insert(group.clone()) {
            continue;
        }
        for x in group.ones() {
            if conflicts[x].meets(&group) {
                bad.set(x);
            }
        }
        let mut left = group.clone();
        while let Some(a) = left.first_one() {
            let mut part = Bits::new(n);
            part.set(a);
            let mut grown = true;
            while grown {
                grown = false;
                for b in part.clone().ones() {
                    grown |= part.or_masked(&shares[b], &group);
                }
            }
            let mut next = Bits::new(n);
            for b in part.ones() {
                next.or_masked(&follow[b], &follow[b]);
                left.clear(b);
            }
            if next.first_one().is_some() && !seen.contains(&next) {
                todo.push(next);
            }
        }
    }
    Some(bad)
}

/// A set of small indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn from_iter(n: usize, it: impl Iterator<Item = usize>) -> Bits {
        let mut b = Bits::new(n);
        it.for_each(|i| b.set(i));
        b
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn meets(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }

    /// Adds `other ∩ mask`; returns whether anything was new.
    fn or_masked(&mut self, other: &Bits, mask: &Bits) -> bool {
        let mut changed = false;
        for ((w, o), m) in self.0.iter_mut().zip(&other.0).zip(&mask.0) {
            let n = *w | (o & m);
            changed |= n != *w;
            *w = n;
        }
        changed
    }

    fn first_one(&self) -> Option<usize> {
        self.ones().next()
    }

    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(k, &w)| {
            (0..64)
                .filter(move |i| w & (1 << i) != 0)
                .map(move |i| k * 64 + i)
        })
    }
}

/// Lexeme-level first sets (where the grammar starts) and follow sets (per lexeme) of the
/// Lark rules.
struct LexSets {
    start: BTreeSet<Id>,
    follow: HashMap<Id, BTreeSet<Id>>,
}

impl LexSets {
    fn compute<'i>(g: &Grammar, l: &Layout, info: &dyn Fn(Id) -> &'i LangInfo) -> LexSets {
        let mut s = FirstSets {
            rule_first: vec![BTreeSet::new(); g.rules.len()],
            rule_nullable: vec![false; g.rules.len()],
        };
        // Rules' first sets and nullability, to a fixpoint.
        loop {
            let mut changed = false;
            for &r in &l.order {
                let (f, n) = s.first(g, l, info, g.rules[r].body);
                if n && !s.rule_nullable[r] {
                    s.rule_nullable[r] = true;
                    changed = true;
                }
                if !f.is_subset(&s.rule_first[r]) {
                    s.rule_first[r].extend(f);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut rule_follow: Vec<BTreeSet<Id>> = vec![BTreeSet::new(); g.rules.len()];
        let mut follow: HashMap<Id, BTreeSet<Id>> = HashMap::new();
        loop {
            let before: usize = rule_follow.iter().map(BTreeSet::len).sum();
            for &r in &l.order {
                let f = rule_follow[r].clone();
                s.follow(
                    g,
                    l,
                    info,
                    g.rules[r].body,
                    &f,
                    &mut follow,
                    &mut rule_follow,
                );
            }
            if rule_follow.iter().map(BTreeSet::len).sum::<usize>() == before {
                break;
            }
        }
        let start = s.first(g, l, info, g.rules[g.root].body).0;
        LexSets { start, follow }
    }
}

struct FirstSets {
    rule_first: Vec<BTreeSet<Id>>,
    rule_nullable: Vec<bool>,
}

impl FirstSets {
    fn first<'i>(
        &self,
        g: &Grammar,
        l: &Layout,
        info: &dyn Fn(Id) -> &'i LangInfo,
        n: Id,
    ) -> (BTreeSet<Id>, bool) {
        if l.lexemes.contains(&n) {
            return (BTreeSet::from([n]), info(n).nullable);
        }
        match g.kind(n) {
            Kind::Char { .. } => unreachable!("chars are lexemes"),
            Kind::Seq { items, .. } => {
                let mut out = BTreeSet::new();
                for &c in items {
                    let (f, nullable) = self.first(g, l, info, c);
                    out.extend(f);
                    if !nullable {
                        return (out, false);
                    }
                }
                (out, true)
            }
            Kind::Alt(items) => {
                let mut out = BTreeSet::new();
                let mut nullable = false;
                for &c in items {
                    let (f, n) = self.first(g, l, info, c);
                    out.extend(f);
                    nullable |= n;
                }
                (out, nullable)
            }
            Kind::Rep { item, min, max } => {
                let (f, n) = self.first(g, l, info, *item);
                (f, n || *min == 0 || *max == Some(0))
            }
            Kind::Ref(r) => (self.rule_first[*r].clone(), self.rule_nullable[*r]),
        }
    }

    /// Adds `after` (what may follow `n`) to the follow sets of the lexemes in `n`.
    #[allow(clippy::too_many_arguments)]
    fn follow<'i>(
        &self,
        g: &Grammar,
        l: &Layout,
        info: &dyn Fn(Id) -> &'i LangInfo,
        n: Id,
        after: &BTreeSet<Id>,
        follow: &mut HashMap<Id, BTreeSet<Id>>,
        rule_follow: &mut [BTreeSet<Id>],
    ) {
        if l.lexemes.contains(&n) {
            follow.entry(n).or_default().extend(after);
            return;
        }
        match g.kind(n) {
            Kind::Char { .. } => unreachable!("chars are lexemes"),
            Kind::Seq { items, .. } => {
                let mut acc = after.clone();
                for &c in items.iter().rev() {
                    self.follow(g, l, info, c, &acc, follow, rule_follow);
                    let (f, nullable) = self.first(g, l, info, c);
                    if !nullable {
                        acc.clear();
                    }
                    acc.extend(f);
                }
            }
            Kind::Alt(items) => {
                for &c in items {
                    self.follow(g, l, info, c, after, follow, rule_follow);
                }
            }
            Kind::Rep { item, max, .. } => {
                let mut acc = after.clone();
                if max.is_none_or(|m| m > 1) {
                    acc.extend(self.first(g, l, info, *item).0);
                }
                self.follow(g, l, info, *item, &acc, follow, rule_follow);
            }
            Kind::Ref(r) => rule_follow[*r].extend(after),
        }
    }
}

/// Whether `n` refers only to regular rules.
fn is_regular(g: &Grammar, regular: &[bool], n: Id) -> bool {
    refs_in(g, n).iter().all(|&r| regular[r])
}

/// Whether `n` can match nothing but the empty text (no lexeme can be made of it).
fn only_empty(g: &Grammar, n: Id) -> bool {
    match g.kind(n) {
        Kind::Char { .. } => false,
        Kind::Seq { items, .. } | Kind::Alt(items) => items.iter().all(|&c| only_empty(g, c)),
        Kind::Rep { item, max, .. } => *max == Some(0) || only_empty(g, *item),
        Kind::Ref(r) => only_empty(g, g.rules[*r].body),
    }
}

/// Lexemes with the same key have the same language: a reference to a rule is its body.
fn lang_key(g: &Grammar, n: Id) -> Id {
    match g.kind(n) {
        Kind::Ref(r) => g.rules[*r].body,
        _ => n,
    }
}

/// A Glushkov automaton: each position reads one set of characters.
#[derive(Default)]
struct Glushkov {
    chars: Vec<CharSet>,
    follow: Vec<BTreeSet<usize>>,
}

#[derive(Clone)]
struct Frag {
    first: BTreeSet<usize>,
    last: BTreeSet<usize>,
    nullable: bool,
}

impl Frag {
    fn empty() -> Frag {
        Frag {
            first: BTreeSet::new(),
            last: BTreeSet::new(),
            nullable: true,
        }
    }
}

impl Glushkov {
    fn build(&mut self, g: &Grammar, n: Id) -> Option<Frag> {
        if self.chars.len() > MAX_POSITIONS {
            return None;
        }
        Some(match g.kind(n) {
            Kind::Char { set, .. } => {
                self.chars.push(set.clone());
                self.follow.push(BTreeSet::new());
                let p = BTreeSet::from([self.chars.len() - 1]);
                Frag {
                    first: p.clone(),
                    last: p,
                    nullable: false,
                }
            }
            Kind::Seq { items, .. } => {
                let mut acc = Frag::empty();
                for &c in items {
                    let f = self.build(g, c)?;
                    acc = self.seq(acc, f);
                }
                acc
            }
            Kind::Alt(items) => {
                let mut acc = Frag {
                    nullable: false,
                    ..Frag::empty()
                };
                for &c in items {
                    let f = self.build(g, c)?;
                    acc.first.extend(f.first);
                    acc.last.extend(f.last);
                    acc.nullable |= f.nullable;
                }
                acc
            }
            Kind::Rep { item, min, max } => self.repeat(g, *item, *min, *max)?,
            Kind::Ref(r) => self.build(g, g.rules[*r].body)?,
        })
    }

    fn seq(&mut self, a: Frag, b: Frag) -> Frag {
        for &p in &a.last {
            self.follow[p].extend(b.first.iter().copied());
        }
        let mut first = a.first;
        if a.nullable {
            first.extend(b.first.iter().copied());
        }
        let mut last = b.last;
        if b.nullable {
            last.extend(a.last);
        }
        Frag {
            first,
            last,
            nullable: a.nullable && b.nullable,
        }
    }

    fn plus(&mut self, f: Frag) -> Frag {
        for &p in &f.last {
            self.follow[p].extend(f.first.iter().copied());
        }
        f
    }

    fn repeat(&mut self, g: &Grammar, item: Id, min: u32, max: Option<u32>) -> Option<Frag> {
        if max == Some(0) {
            return Some(Frag::empty());
        }
        let exact = min <= MAX_UNROLL && max.is_none_or(|m| m <= MAX_UNROLL);
        if !exact {
            let f = self.build(g, item)?;
            let mut f = self.plus(f);
            f.nullable |= min == 0;
            return Some(f);
        }
        let mut acc = Frag::empty();
        for _ in 0..min.saturating_sub(u32::from(max.is_none())) {
            let f = self.build(g, item)?;
            acc = self.seq(acc, f);
        }
        match max {
            None => {
                let f = self.build(g, item)?;
                let mut f = self.plus(f);
                f.nullable |= min == 0;
                acc = self.seq(acc, f);
            }
            Some(m) => {
                for _ in min..m {
                    let mut f = self.build(g, item)?;
                    f.nullable = true;
                    acc = self.seq(acc, f);
                }
            }
        }
        Some(acc)
    }
}

/// The analysis of a regular part; when it is too large, the answer that makes it fail the
/// check wherever anything follows it.
fn lang_info(g: &Grammar, n: Id) -> LangInfo {
    if let Kind::Char { set, .. } = g.kind(n) {
        return LangInfo {
            first: set.clone(),
            inner: CharSet::default(),
            cont: CharSet::default(),
            multi: false,
            nullable: false,
        };
    }
    let mut a = Glushkov::default();
    let frag = a.build(g, n);
    frag.and_then(|f| explore(&a, &f)).unwrap_or(LangInfo {
        first: CharSet::all(),
        inner: CharSet::all(),
        cont: CharSet::all(),
        multi: true,
        nullable: true,
    })
}

/// Walks the automaton's subset construction for the characters read after the first one,
/// and after complete words.
fn explore(a: &Glushkov, f: &Frag) -> Option<LangInfo> {
    let out_chars = |cands: &BTreeSet<usize>| {
        let mut s = CharSet::default();
        for &q in cands {
            s.add(&a.chars[q]);
        }
        s
    };
    let next = |state: &BTreeSet<usize>| {
        let mut c = BTreeSet::new();
        for &p in state {
            c.extend(a.follow[p].iter().copied());
        }
        c
    };
    let mut info = LangInfo {
        first: out_chars(&f.first),
        inner: CharSet::default(),
        cont: CharSet::default(),
        multi: false,
        nullable: f.nullable,
    };
    let mut seen: HashSet<BTreeSet<usize>> = HashSet::new();
    let mut todo = successors(a, &f.first);
    while let Some(state) = todo.pop() {
        if !seen.insert(state.clone()) {
            continue;
        }
        if seen.len() > MAX_STATES {
            return None;
        }
        let cands = next(&state);
        let chars = out_chars(&cands);
        info.inner.add(&chars);
        if !state.is_disjoint(&f.last) {
            info.cont.add(&chars);
        }
        todo.extend(successors(a, &cands));
    }
    info.multi = !info.inner.is_empty();
    Some(info)
}

/// The states reached from candidate positions `cands` by one character: positions grouped
/// by the characters they share.
fn successors(a: &Glushkov, cands: &BTreeSet<usize>) -> Vec<BTreeSet<usize>> {
    let mut bounds: Vec<u32> = Vec::new();
    for &q in cands {
        for &(lo, hi) in a.chars[q].ranges() {
            bounds.push(lo);
            bounds.push(hi.saturating_add(1));
        }
    }
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: HashSet<BTreeSet<usize>> = HashSet::new();
    for &b in &bounds {
        let state: BTreeSet<usize> = cands
            .iter()
            .copied()
            .filter(|&q| a.chars[q].contains(b))
            .collect();
        if !state.is_empty() {
            out.insert(state);
        }
    }
    out.into_iter().collect()
}
