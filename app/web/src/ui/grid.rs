//! The photo grid, virtualised: every photo of the album when there is no query, else the
//! query's results. Only the cells on screen (and a screen's worth around them) are in the
//! document; each loads its thumbnail from IndexedDB when it appears and lets it go when it
//! leaves.

use leptos::ev;
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::state::State;
use super::{choose_folder, open_large, search, store};
use crate::i18n::Key;

/// Narrowest cell, and the height of the line under each thumbnail (both in CSS pixels).
const CELL_MIN: f64 = 170.0;
const META_H: f64 = 64.0;
const GAP: f64 = 12.0;
/// Rows kept in the document above and below the visible ones.
const OVERSCAN_ROWS: f64 = 4.0;

/// Where the grid is: its top relative to the viewport, its width and the viewport's height.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Viewport {
    top: f64,
    width: f64,
    height: f64,
}

/// One cell: the photo's place in the list, its hash and, for a query, its score.
#[derive(Clone, Debug, PartialEq)]
struct Cell {
    index: usize,
    hash: String,
    score: Option<f32>,
}

#[component]
pub fn Photos() -> impl IntoView {
    let s = expect_context::<State>();
    let grid = NodeRef::<html::Ol>::new();
    let view_at = RwSignal::new(Viewport { top: 0.0, width: 1000.0, height: 900.0 });
    let measure = move || {
        let (Some(el), Some(w)) = (grid.get_untracked(), web_sys::window()) else { return };
        let r = el.get_bounding_client_rect();
        let height = w.inner_height().ok().and_then(|h| h.as_f64()).unwrap_or(900.0);
        view_at.set(Viewport { top: r.top(), width: r.width().max(1.0), height });
    };
    let _scroll = window_event_listener(ev::scroll, move |_| measure());
    let _resize = window_event_listener(ev::resize, move |_| measure());
    // After the content above the grid changes size.
    Effect::new(move |_| {
        s.results.track();
        s.photos.with(|a| a.len());
        request_animation_frame(measure);
    });

    // How many items the grid shows: a query's hits, or every photo.
    let total = move || {
        if s.results.with(|r| r.searched) {
            s.results.with(|r| r.hits.len())
        } else {
            s.photos.with(|a| a.len())
        }
    };
    let layout = move || {
        let v = view_at.get();
        let cols = (((v.width + GAP) / (CELL_MIN + GAP)).floor() as usize).max(1);
        let cell_w = (v.width - GAP * (cols as f64 - 1.0)) / cols as f64;
        let row_h = cell_w + META_H + GAP;
        (cols, cell_w, row_h)
    };
    let visible = Memo::new(move |_| {
        let v = view_at.get();
        let (cols, _, row_h) = layout();
        let n = total();
        let first_row = ((-v.top / row_h).floor() - OVERSCAN_ROWS).max(0.0) as usize;
        let last_row = (((v.height - v.top) / row_h).ceil() + OVERSCAN_ROWS).max(0.0) as usize;
        let (from, to) = ((first_row * cols).min(n), ((last_row + 1) * cols).min(n));
        if s.results.with(|r| r.searched) {
            s.results.with(|r| {
                r.hits[from..to]
                    .iter()
                    .enumerate()
                    .map(|(i, (hash, score))| Cell { index: from + i, hash: hash.clone(), score: Some(*score) })
                    .collect::<Vec<_>>()
            })
        } else {
            // Newest first.
            s.photos.with(|a| {
                (from..to)
                    .map(|i| Cell { index: i, hash: a.list[a.len() - 1 - i].hash.to_string(), score: None })
                    .collect()
            })
        }
    });
    let heading = move || {
        let n = total();
        if s.results.with(|r| r.searched) {
            let similar = s.results.with(|r| r.similar_to.clone()).map(|h| {
                let name = s.photos.with(|a| a.get(&h).map(|p| p.name().to_string())).unwrap_or_default();
                format!("{} {name} · ", s.t(Key::SimilarTo))
            });
            format!("{}{n} {}", similar.unwrap_or_default(), s.t(Key::Results))
        } else {
            format!("{} · {n} {}", s.t(Key::AllPhotos), s.t(Key::Photos))
        }
    };
    let more = move || {
        let r = s.results.get();
        (r.searched && r.hits.len() >= s.top_k.get()).then(|| {
            view! {
                <button id="show-more" class="more" on:click=move |_| spawn_local(search::show_more(s))>{s.t(Key::ShowMore)}</button>
            }
        })
    };
    view! {
        <section class="results" aria-labelledby="results-h">
            <div class="results-head">
                <h2 id="results-h" aria-live="polite">{heading}</h2>
                {move || s.results.with(|r| r.searched).then(|| view! {
                    <button class="link" id="all-photos" on:click=move |_| {
                        s.results.set(Default::default());
                        s.last_query.set(None);
                    }>{s.t(Key::AllPhotos)}</button>
                })}
            </div>
            {move || (s.results.with(|r| r.searched && r.hits.is_empty())).then(|| view! { <p class="muted">{s.t(Key::NoResults)}</p> })}
            {move || (!s.results.with(|r| r.searched) && s.photos.with(|a| a.is_empty())).then(|| view! {
                <div class="empty" id="empty">
                    <p class="muted">{s.t(Key::EmptyAlbum)}</p>
                    <button on:click=move |_| spawn_local(choose_folder(s))>{s.t(Key::PickFolder)}</button>
                </div>
            })}
            <ol
                class="grid"
                id="results"
                node_ref=grid
                data-total=total
                data-view=move || if s.results.with(|r| r.searched) { "results" } else { "all" }
                // Through the CSSOM (style:), which the Content-Security-Policy allows; a style
                // attribute would need 'unsafe-inline'.
                style:height=move || {
                    let (cols, _, row_h) = layout();
                    let rows = total().div_ceil(cols);
                    format!("{}px", (rows as f64 * row_h - GAP).max(0.0))
                }
            >
                // The score is in the key: a photo at the same place in the album view and in a
                // query's results is another cell (its score and label differ).
                <For each=move || visible.get() key=|c| (c.index, c.hash.clone(), c.score.map(f32::to_bits)) let:c>
                    {
                        let (cols, cell_w, row_h) = layout();
                        let (row, col) = (c.index / cols, c.index % cols);
                        let place = Place {
                            width: format!("{cell_w:.1}px"),
                            height: format!("{:.1}px", cell_w + META_H),
                            transform: format!("translate({:.1}px, {:.1}px)", col as f64 * (cell_w + GAP), row as f64 * row_h),
                        };
                        cell_view(s, c, place)
                    }
                </For>
            </ol>
            {more}
        </section>
    }
}

/// A cell's size and place, set through the CSSOM.
struct Place {
    width: String,
    height: String,
    transform: String,
}

fn cell_view(s: State, c: Cell, place: Place) -> impl IntoView {
    let (name, path) = s
        .photos
        .with_untracked(|a| a.get(&c.hash).map(|p| (p.file_name().to_string(), p.name().to_string())))
        .unwrap_or_default();
    let label = match c.score {
        Some(score) => format!("{name} · {} {score:.3}", s.t_untracked(Key::Score)),
        None => name.clone(),
    };
    let (h1, h2) = (c.hash.clone(), c.hash.clone());
    let (n1, n2) = (name.clone(), name.clone());
    view! {
        <li class="hit" style:width=place.width style:height=place.height style:transform=place.transform data-hash=c.hash.clone() data-name=name.clone() data-score=c.score.map(|x| x.to_string())>
            <button class="thumb" aria-label=label on:click=move |_| open_large(s, h1.clone())>
                <Thumb hash=c.hash.clone() alt=n1 />
            </button>
            <div class="meta">
                {c.score.map(|score| view! { <span class="score">{format!("{score:.3}")}</span> })}
                <span class="name" title=path>{n2}</span>
                <button class="similar" on:click=move |_| spawn_local(search::search_similar(s, h2.clone()))>{move || s.t(Key::Similar)}</button>
            </div>
        </li>
    }
}

/// A stored thumbnail, read from IndexedDB when the cell appears, let go when it leaves.
#[component]
fn Thumb(hash: String, alt: String) -> impl IntoView {
    let url = RwSignal::new(None::<String>);
    let alive = StoredValue::new(true);
    spawn_local(async move {
        if let Ok(Some(u)) = store::thumb_url(&hash).await {
            if alive.try_get_value().unwrap_or(false) {
                url.set(Some(u));
            } else {
                let _ = web_sys::Url::revoke_object_url(&u);
            }
        }
    });
    on_cleanup(move || {
        alive.set_value(false);
        if let Some(u) = url.get_untracked() {
            let _ = web_sys::Url::revoke_object_url(&u);
        }
    });
    move || url.get().map(|u| view! { <img src=u alt=alt.clone() /> })
}
