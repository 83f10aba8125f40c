//! The page, search first: the search box and the photos (a virtualised grid: every photo, or a
//! query's results), with the album and the model in a side panel, and the large view.
//! File names and every other user-supplied string are rendered as text nodes, never as HTML.

mod engine;
mod grid;
mod index_worker;
mod indexer;
mod model;
mod models;
mod search;
mod state;
mod store;
mod test_api;

use js_sys::Array;
use leptos::ev;
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use crate::i18n::{Key, Lang};
use state::{format_bytes, format_duration, now_ms, ModelStatus, RunState, State};

const LANG_SETTING: &str = "brivl.lang";

/// `?test_hooks=1` in the address (set only by the browser tests): photos whose names carry a
/// test-fault marker make the engine worker fail on them, and the watchdog waits less.
pub(crate) fn test_hooks() -> bool {
    let search = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    search.trim_start_matches('?').split('&').any(|kv| kv == "test_hooks=1")
}

pub fn mount() {
    console_error_panic_hook::set_once();
    store::register_service_worker();
    leptos::mount::mount_to_body(App);
}

fn initial_lang() -> Lang {
    let w = web_sys::window();
    let stored =
        w.as_ref().and_then(|w| w.local_storage().ok().flatten()).and_then(|ls| ls.get_item(LANG_SETTING).ok()?);
    let browser = w.and_then(|w| w.navigator().language());
    Lang::from_tag(&stored.or(browser).unwrap_or_default())
}

#[component]
fn App() -> impl IntoView {
    let s = State::new(initial_lang());
    provide_context(s);

    Effect::new(move |_| {
        let lang = s.lang.get();
        if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
            if let Some(el) = doc.document_element() {
                let _ = el.set_attribute("lang", lang.tag());
            }
        }
        if let Some(ls) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
            let _ = ls.set_item(LANG_SETTING, lang.tag());
        }
    });
    let _esc = window_event_listener(ev::keydown, move |e| {
        if e.key() == "Escape" {
            s.open.set(None);
        }
    });

    spawn_local(async move {
        indexer::load_index(s).await;
        model::load_startup(s).await;
        models::sweep_leftovers().await;
        let _ = store::wait(store::drop_old_model_cache()).await;
    });
    spawn_local(search::load_dictionary(s));
    if test_hooks() {
        test_api::install(s);
    }

    view! {
        <a class="skip" href="#query">{move || s.t(Key::QueryLabel)}</a>
        <header class="top">
            <div class="brand">
                <h1>"brivl"</h1>
            </div>
            <SearchForm />
            <div class="top-actions">
                <button
                    id="panel-toggle"
                    class="panel-toggle"
                    aria-controls="side"
                    aria-expanded=move || if s.panel_open.get() { "true" } else { "false" }
                    on:click=move |_| s.panel_open.update(|o| *o = !*o)
                >
                    {move || s.t(Key::SidePanel)}
                </button>
                <button
                    class="lang"
                    id="lang-switch"
                    aria-label=move || s.t(Key::SwitchLangLabel)
                    on:click=move |_| s.lang.update(|l| *l = l.other())
                >
                    {move || s.t(Key::SwitchLang)}
                </button>
            </div>
        </header>
        <div class="layout">
            <main>
                <Notices />
                <grid::Photos />
            </main>
            <aside id="side" class=move || if s.panel_open.get() { "side open" } else { "side" } aria-label=move || s.t(Key::SidePanel)>
                <AlbumPanel />
                <ModelPanel />
                <p class="muted tagline">{move || s.t(Key::Tagline)}</p>
            </aside>
        </div>
        <footer>
            <p>{move || s.t(Key::Privacy)}</p>
        </footer>
        <LargeView />
    }
}

#[component]
fn SearchForm() -> impl IntoView {
    let s = expect_context::<State>();
    let submit = move |e: ev::SubmitEvent| {
        e.prevent_default();
        spawn_local(search::search_text(s));
    };
    view! {
        <form class="search" on:submit=submit role="search">
            <label for="query" class="visually-hidden">{move || s.t(Key::QueryLabel)}</label>
            <div class="row">
                <input
                    id="query"
                    type="search"
                    autocomplete="off"
                    placeholder=move || s.t(Key::QueryPlaceholder)
                    prop:value=move || s.query.get()
                    on:input=move |e| {
                        let v = event_target_value(&e);
                        s.query_used.set(search::prepare_query(&v));
                        s.query.set(v);
                    }
                />
                <button id="search" type="submit" disabled=move || s.in_use.with(Option::is_none)>{move || s.t(Key::SearchButton)}</button>
            </div>
            <details class="advanced" id="advanced">
                <summary>{move || s.t(Key::Advanced)}</summary>
                <label for="query-used">{move || s.t(Key::QueryUsed)}</label>
                <input
                    id="query-used"
                    type="text"
                    aria-describedby="query-used-help"
                    prop:value=move || s.query_used.get()
                    on:input=move |e| s.query_used.set(event_target_value(&e))
                />
                <p class="muted" id="query-used-help">{move || s.t(Key::QueryUsedHelp)}</p>
                <label for="min-score">{move || s.t(Key::MinScore)}</label>
                <input id="min-score" type="number" min="-1" max="1" step="0.05"
                    prop:value=move || s.min_score.get().map(|m| format!("{m}")).unwrap_or_default()
                    on:change=move |e| {
                        let v = event_target_value(&e);
                        s.min_score.set(v.trim().parse::<f32>().ok().map(|m| m.clamp(-1.0, 1.0)));
                        spawn_local(search::rerank(s));
                    } />
            </details>
        </form>
    }
}

/// What needs the person's attention before indexing can go on: folders to allow again, photos
/// that were added without folder access and need their folder again.
#[component]
fn Notices() -> impl IntoView {
    let s = expect_context::<State>();
    view! {
        {move || {
            let roots = s.need_permission.get();
            (!roots.is_empty()).then(|| view! {
                <div class="callout" id="need-permission" role="status">
                    <p>{s.t(Key::NeedPermission)}" "<span class="name">{roots.join(", ")}</span></p>
                    <button id="allow-folders" on:click=move |_| spawn_local(indexer::allow_folders(s))>{s.t(Key::AllowFolders)}</button>
                </div>
            })
        }}
        {move || {
            let lost = s.unreachable.get();
            (!lost.is_empty()).then(|| {
                let n = lost.len();
                view! {
                    <div class="callout warn" id="not-indexed" role="status" data-count=n>
                        <p>{s.t(Key::NotIndexed)}</p>
                        <details>
                            <summary>{format!("{n} {}", s.t(Key::Photos))}</summary>
                            <ul>{lost.into_iter().take(200).map(|n| view! { <li class="name">{n}</li> }).collect_view()}</ul>
                        </details>
                        <button on:click=move |_| spawn_local(choose_folder(s))>{s.t(Key::PickFolder)}</button>
                    </div>
                }
            })
        }}
    }
}

/// "Choose a folder": a handle where the browser gives one (read in place, again after a reload),
/// else the folder input (files held for this visit).
pub(crate) async fn choose_folder(s: State) {
    if store::has_folder_handles() {
        match store::pick_folder().await {
            Ok(Some(h)) => indexer::add(s, Array::of1(&h), Array::new()).await,
            Ok(None) => {}
            Err(e) => s.notice.set(format!("folder: {e}")),
        }
    } else if let Some(i) =
        web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id("pick-folder"))
    {
        if let Ok(i) = i.dyn_into::<web_sys::HtmlElement>() {
            i.click();
        }
    }
}

#[component]
fn ModelPanel() -> impl IntoView {
    let s = expect_context::<State>();
    let file_ref = NodeRef::<html::Input>::new();
    let on_pick = move |_| {
        if let Some(f) = file_ref.get().and_then(|i| i.files()).and_then(|l| l.get(0)) {
            spawn_local(model::load_file(s, f));
        }
    };
    let on_drop = move |e: ev::DragEvent| {
        e.prevent_default();
        if let Some(f) = e.data_transfer().and_then(|d| d.files()).and_then(|l| l.get(0)) {
            spawn_local(model::load_file(s, f));
        }
    };
    let status = move || {
        let m = s.model.get();
        match &m {
            ModelStatus::Idle => view! { <p>{s.t(Key::ModelNone)}</p> }.into_any(),
            ModelStatus::Downloading { name, received, total } => {
                let pct = if *total > 0.0 { 100.0 * received / total } else { 0.0 };
                view! {
                    <p>{format!("{} {} — {} / {}", s.t(Key::ModelDownloading), name, format_bytes(*received), format_bytes(*total))}</p>
                    <progress max="100" value=pct aria-label=s.t(Key::ModelDownloading)></progress>
                }
                .into_any()
            }
            ModelStatus::Checking { name } => {
                view! { <p>{format!("{name}: {}", s.t(Key::ModelChecking))}</p> }.into_any()
            }
            ModelStatus::Loading { name } => {
                view! { <p>{format!("{name}: {}", s.t(Key::ModelLoading))}</p> }.into_any()
            }
            ModelStatus::Ready(r) => ready_view(s, r).into_any(),
            ModelStatus::Refused { name, error, previous } => view! {
                <p class="error" role="alert" id="model-error">
                    <strong>{format!("{}: ", s.t(Key::ModelRefused))}</strong>{format!("{name}: {error}")}
                </p>
                {previous.as_ref().map(|r| ready_view(s, r))}
            }
            .into_any(),
        }
    };
    view! {
        <section class="panel" aria-labelledby="model-h" on:dragover=|e: ev::DragEvent| e.prevent_default() on:drop=on_drop>
            <h2 id="model-h">{move || s.t(Key::ModelHeading)}</h2>
            <div id="model-status" data-state=move || s.model.with(|m| m.code()) aria-live="polite">{status}</div>
            <div class="row">
                <button on:click=move |_| { if let Some(i) = file_ref.get() { i.click(); } }>{move || s.t(Key::ModelPick)}</button>
                <button id="site-model" on:click=move |_| spawn_local(model::use_site_model(s))>{move || s.t(Key::ModelReloadSite)}</button>
                <input
                    type="file"
                    id="model-file"
                    class="visually-hidden"
                    tabindex="-1"
                    accept=".safetensors"
                    aria-label=move || s.t(Key::ModelPickLabel)
                    node_ref=file_ref
                    on:change=on_pick
                />
            </div>
            <models::ModelList />
            <models::ConvertBox />
        </section>
    }
}

fn ready_view(s: State, r: &state::ReadyModel) -> impl IntoView {
    let engine_line = if r.on_gpu {
        s.t(Key::RunsOnGpu)
    } else if r.gpu_note.is_none() {
        s.t(Key::RunsOnCpuChosen)
    } else {
        s.t(Key::RunsOnCpu)
    };
    let cached = r.from_cache.then(|| format!(" · {}", s.t(Key::ModelFromCache)));
    view! {
        <p>
            <strong>{format!("{}: ", s.t(Key::ModelReady))}</strong>
            <span id="model-name" data-hash=r.hash.clone() data-from-cache=if r.from_cache { "yes" } else { "no" } data-worker-memory=r.worker_memory>{r.name.clone()}</span>
            {format!(" · {}", format_bytes(r.bytes))}
            {cached}
        </p>
        <p id="backend" data-gpu=if r.on_gpu { "yes" } else { "no" } data-backend=r.backend.clone() class=if r.on_gpu { "ok" } else { "warn" }>
            {engine_line}
        </p>
        // What the adapter said, and the backend, folded away: a sentence is what people read.
        <details class="detail">
            <summary>{s.t(Key::Details)}</summary>
            <p>{r.backend.clone()}</p>
            {r.gpu_note.clone().map(|n| view! { <p id="gpu-note">{n}</p> })}
        </details>
    }
}

#[component]
fn AlbumPanel() -> impl IntoView {
    let s = expect_context::<State>();
    let files_ref = NodeRef::<html::Input>::new();
    let folder_ref = NodeRef::<html::Input>::new();
    let dragging = RwSignal::new(false);
    Effect::new(move |_| {
        if let Some(el) = folder_ref.get() {
            let _ = el.set_attribute("webkitdirectory", "");
        }
    });
    let from_input = move |r: NodeRef<html::Input>| {
        if let Some(input) = r.get() {
            if let Some(list) = input.files() {
                let files = store::files_from_input(&list);
                input.set_value("");
                spawn_local(indexer::add_files(s, files));
            }
        }
    };
    let on_drop = move |e: ev::DragEvent| {
        e.prevent_default();
        dragging.set(false);
        if let Some(dt) = e.data_transfer() {
            // Read the items now: the DataTransfer is emptied when this handler returns.
            let pending = store::collect_dropped(&dt);
            spawn_local(async move {
                match store::wait(pending).await {
                    Ok(got) => {
                        let get = |k: &str| {
                            js_sys::Reflect::get(&got, &k.into()).map(|v| Array::from(&v)).unwrap_or_default()
                        };
                        indexer::add(s, get("handles"), get("files")).await
                    }
                    Err(e) => s.notice.set(e),
                }
            });
        }
    };
    let demo = move |_| {
        spawn_local(async move {
            match store::wait(store::demo_files()).await {
                Ok(files) => indexer::add_files(s, files.unchecked_into::<Array>()).await,
                Err(e) => s.notice.set(format!("demo album: {e}")),
            }
        })
    };
    let progress = move || {
        let p = s.progress.get();
        let total = p.done + p.remaining;
        let rate = p.rate(now_ms());
        let eta = if rate > 0.0 {
            format!(" · {} {}", format_duration(p.remaining as f64 / rate), s.t(Key::TimeLeft))
        } else {
            String::new()
        };
        let paused = (p.state == RunState::Paused).then(|| format!("{} · ", s.t(Key::Paused)));
        (total > 0 && p.state != RunState::Idle || p.remaining > 0).then(|| {
            view! {
                <progress max=total.max(1) value=p.done aria-label=s.t(Key::Indexed)></progress>
                <p class="muted" id="rate">
                    {paused}
                    {format!("{} / {total} · {rate:.2} {}{eta}", p.done, s.t(Key::PerSecond))}
                </p>
            }
        })
    };
    view! {
        <section class="panel" aria-labelledby="album-h">
            <h2 id="album-h">{move || s.t(Key::AlbumHeading)}</h2>
            <div
                class=move || if dragging.get() { "dropzone over" } else { "dropzone" }
                id="dropzone"
                role="region"
                aria-label=move || s.t(Key::DropZoneLabel)
                on:dragover=move |e: ev::DragEvent| { e.prevent_default(); dragging.set(true); }
                on:dragleave=move |_| dragging.set(false)
                on:drop=on_drop
            >
                <p>{move || s.t(Key::DropHere)}</p>
                <div class="row">
                    <button id="choose-folder" on:click=move |_| spawn_local(choose_folder(s))>{move || s.t(Key::PickFolder)}</button>
                    <button on:click=move |_| { if let Some(i) = files_ref.get() { i.click(); } }>{move || s.t(Key::PickPhotos)}</button>
                    {move || s.in_use.with(|m| m.as_ref().is_some_and(|m| m.demo)).then(|| view! {
                        <button id="demo" on:click=demo>{move || s.t(Key::TryDemo)}</button>
                    })}
                </div>
                <input type="file" id="pick-files" class="visually-hidden" tabindex="-1" multiple accept="image/*"
                    aria-label=move || s.t(Key::PickPhotos) node_ref=files_ref on:change=move |_| from_input(files_ref) />
                <input type="file" id="pick-folder" class="visually-hidden" tabindex="-1" multiple
                    aria-label=move || s.t(Key::PickFolder) node_ref=folder_ref on:change=move |_| from_input(folder_ref) />
            </div>
            <div
                id="index-status"
                data-state=move || match s.progress.get().state {
                    _ if s.other_tab.get() => "waiting",
                    RunState::Idle => "idle",
                    RunState::Running => "running",
                    RunState::Paused => "paused",
                }
                data-indexed=move || s.photos.with(|p| p.len())
                data-queued=move || s.progress.get().remaining
                data-failed=move || s.failures.with(|f| f.len())
                data-not-photos=move || s.not_photos.get()
                data-searchable=move || if s.searchable.get() { "yes" } else { "no" }
            >
                <p>
                    <strong>{move || s.photos.with(|p| p.len())}</strong>
                    {move || format!(" {}", s.t(Key::Indexed))}
                    {move || { let q = s.progress.get().remaining; (q > 0).then(|| format!(" · {q} {}", s.t(Key::Queued))) }}
                </p>
                {progress}
                {move || s.other_tab.get().then(|| view! { <p class="warn" id="other-tab">{s.t(Key::OtherTab)}</p> })}
                {move || (s.in_use.with(Option::is_none) && s.progress.get().remaining > 0).then(|| view! { <p class="warn">{s.t(Key::NeedModel)}</p> })}
            </div>
            <div class="row">
                {move || match s.progress.get().state {
                    RunState::Paused => view! { <button id="resume" on:click=move |_| indexer::resume(s)>{s.t(Key::Resume)}</button> }.into_any(),
                    _ => view! { <button id="pause" disabled=move || s.progress.get().state != RunState::Running on:click=move |_| indexer::pause(s)>{s.t(Key::Pause)}</button> }.into_any(),
                }}
                <button id="cancel" disabled=move || s.progress.get().remaining == 0 on:click=move |_| spawn_local(indexer::cancel(s))>{move || s.t(Key::Cancel)}</button>
                <button id="clear" class="danger" on:click=move |_| {
                    let ok = web_sys::window().and_then(|w| w.confirm_with_message(s.t(Key::ClearConfirm)).ok()).unwrap_or(false);
                    if ok { spawn_local(indexer::clear(s)); }
                }>{move || s.t(Key::ClearIndex)}</button>
            </div>
            <p class="notice" id="notice" aria-live="polite">{move || s.notice.get()}</p>
            {move || {
                let f = s.failures.get();
                (!f.is_empty()).then(|| view! {
                    <details id="skipped">
                        <summary>{format!("{} ({})", s.t(Key::Skipped), f.len())}</summary>
                        <ul>
                            {f.into_iter().map(|f| view! { <li><span class="name">{f.names.join(", ")}</span>": "<span class="muted">{f.reason}</span></li> }).collect_view()}
                        </ul>
                    </details>
                })
            }}
        </section>
    }
}

/// Shows a photo large and moves keyboard focus into the view (Escape or Close leaves it).
pub(crate) fn open_large(s: State, hash: String) {
    s.open.set(Some(hash));
    request_animation_frame(|| {
        let el = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id("close-large"));
        if let Some(el) = el.and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
            let _ = el.focus();
        }
    });
}

/// The large view: the original (read through its folder handle, or the file given in this
/// visit), else the stored thumbnail.
#[component]
fn LargeView() -> impl IntoView {
    let s = expect_context::<State>();
    // (object URL, whether it is the original); `made` is a URL this view created (revoked when
    // another photo opens or the view closes).
    let src = RwSignal::new(None::<(String, bool)>);
    let made = StoredValue::new(None::<String>);
    Effect::new(move |_| {
        let hash = s.open.get();
        if let Some(url) = made.get_value() {
            let _ = web_sys::Url::revoke_object_url(&url);
            made.set_value(None);
        }
        src.set(None);
        let Some(h) = hash else { return };
        spawn_local(async move {
            let shown = match s.originals.with_untracked(|o| o.get(&h).cloned()) {
                Some(u) => Some((u, true, false)),
                None => match store::original_url(&h).await.ok().flatten() {
                    Some(u) => Some((u, true, true)),
                    None => store::thumb_url(&h).await.ok().flatten().map(|u| (u, false, true)),
                },
            };
            let Some((url, original, ours)) = shown else { return };
            if s.open.get_untracked().as_ref() != Some(&h) {
                if ours {
                    let _ = web_sys::Url::revoke_object_url(&url);
                }
                return;
            }
            if ours {
                made.set_value(Some(url.clone()));
            }
            src.set(Some((url, original)));
        });
    });
    move || {
        let hash = s.open.get()?;
        let photo = s.photos.with(|a| a.get(&hash).cloned())?;
        let alt = photo.name().to_string();
        let h = hash.clone();
        Some(view! {
            <div class="overlay" on:click=move |_| s.open.set(None)>
                <div class="large" role="dialog" aria-modal="true" aria-label=photo.name().to_string() on:click=|e| e.stop_propagation()>
                    {move || src.get().map(|(url, original)| view! {
                        <img src=url alt=alt.clone() data-original=if original { "yes" } else { "no" } />
                    })}
                    <div class="meta">
                        <span class="name">{photo.names.join(", ")}</span>
                        {move || src.with(|x| matches!(x, Some((_, false)))).then(|| view! { <p class="muted">{s.t(Key::ThumbOnly)}</p> })}
                        <div class="row">
                            <button on:click=move |_| spawn_local(search::search_similar(s, h.clone()))>{s.t(Key::Similar)}</button>
                            <button id="close-large" on:click=move |_| s.open.set(None)>{s.t(Key::Close)}</button>
                        </div>
                    </div>
                </div>
            </div>
        })
    }
}
