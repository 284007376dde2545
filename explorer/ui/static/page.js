// vaescope's page script (loaded in <head> after bridge.js): the view in the address, and the
// presenter layout's views.
//
// 1. The address holds the view: the model, the page's tab (and the Explore page's view), the lesson,
//    the presenter layout, the map's projection and colouring, and the picked point. It is rewritten
//    (history.replaceState) whenever one of them changes, so a reload or a copied link opens the same
//    view: the server reads model, projection, colouring and tabs from it when the page loads, the
//    lesson and presenter toggles read it in the page, and the picked point is clicked again below.
// 2. window.vaescopeCopyLink copies that address (the "Copy link" button).
// 3. Page classes the stylesheet lays out by: `lesson-on` while a lesson's banner shows, with
//    `lesson-NAME`; `present` comes from the presenter toggle (ui/models.py); `live` while a
//    presenter looks at the views behind a lesson's own screen.
// 4. The presenter layout shows one Explore view at a time: turning it on opens the map and
//    traversal ("Map & traversal" tab), turning it off leaves that tab, which is empty elsewhere.
// 5. A screen of the presenter layout never scrolls: its plots give up what it lacks.
// 6. An animation interrupted by the next (plotly's Pause) is not reported as an error.
(() => {
  const opened = new URLSearchParams(window.location.search);
  const OURS = ['model', 'tab', 'view', 'lesson', 'present', 'projection', 'colour', 'point'];
  const value = (selector) => {
    const el = document.querySelector(`${selector} input, ${selector} textarea`);
    return el ? el.value : '';
  };
  const selectedTab = (root) => {
    const b = document.querySelector(`${root} > .tab-wrapper button[role=tab][aria-selected=true]`) ||
      document.querySelector(`${root} button[role=tab][aria-selected=true]`);
    return b && b.id ? b.id.replace(/^tab-/, '').replace(/-button$/, '') : '';
  };
  const lessonOn = () => {
    const banner = document.querySelector('#lesson-banner-group');
    return !!(banner && banner.offsetParent !== null && value('#lesson-name'));
  };
  let picked = opened.get('point') || '';
  // the image the map's last click picked, while the page shows it (a new model clears it)
  const pickedPoint = () => {
    const info = document.querySelector('#picked-info');
    if (!info || info.innerText.trim().startsWith('Click')) return '';
    try {
      const last = JSON.parse(window.__picked || 'null');
      if (last && last.kind === 'point') picked = String(last.index);
    } catch (err) { /* an unreadable click: keep the last one */ }
    return picked;
  };
  const state = () => {
    const tab = selectedTab('#top-tabs');
    const found = {
      model: value('#checkpoint-dropdown'),
      tab: tab,
      view: tab === 'explore' ? selectedTab('#main-tabs') : '',
      lesson: lessonOn() ? value('#lesson-name') : '',
      present: document.body.classList.contains('present') ? '1' : '',
      projection: value('#map-method').toLowerCase(),
      colour: value('#map-color').toLowerCase(),
      point: pickedPoint(),
    };
    return found;
  };
  const address = (found) => {
    const params = new URLSearchParams(window.location.search);
    for (const key of OURS) {
      if (found[key]) params.set(key, found[key]); else params.delete(key);
    }
    const query = params.toString();
    return window.location.pathname + (query ? `?${query}` : '') + window.location.hash;
  };
  // Nothing is written until the page has opened what its address asked for (its first map is
  // drawn, a lesson's words are in), so the address is never rewritten from the page's defaults.
  let settled = false;
  const startedAt = Date.now();
  const ready = () => {
    const gd = document.querySelector('#latent-map .js-plotly-plot');
    const mapDrawn = !!(gd && gd._fullData && gd._fullData.some((t) => t.customdata));
    const banner = document.querySelector('#lesson-banner');
    const lessonIn = !opened.get('lesson') || !!(banner && banner.innerText && !banner.innerText.includes('Loading'));
    return (mapDrawn && lessonIn) || Date.now() - startedAt > 60000;
  };
  const write = () => {
    if (!settled) {
      if (!ready()) return;
      settled = true;
      restorePoint();
    }
    const next = address(state());
    const now = window.location.pathname + window.location.search + window.location.hash;
    if (next !== now) window.history.replaceState(window.history.state, '', next);
  };
  // the picked point of the address, clicked once the map is drawn (as the map's own click does)
  const restorePoint = () => {
    const index = Number(opened.get('point'));
    if (!opened.get('point') || !Number.isInteger(index) || index < 0) return;
    window.__picked = JSON.stringify({kind: 'point', index: index, t: Date.now()});
    const btn = document.querySelector('#pick-btn');
    if (btn) btn.click();
  };
  window.vaescopeCopyLink = () => {
    write();
    const link = window.location.href;
    window.__vaescopeLink = link;
    const button = document.querySelector('#copy-link-btn');
    const said = (words) => {
      if (!button) return;
      const before = button.dataset.words || button.innerText;
      button.dataset.words = before;
      button.innerText = words;
      setTimeout(() => { button.innerText = before; }, 2500);
    };
    const fallback = () => { window.prompt('Copy this link:', link); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(link).then(() => said('✓ Link copied')).catch(fallback);
    } else {
      fallback();
    }
  };
  // -- page classes and the presenter layout's views --
  let wasPresent = false, lastLesson = '', keepView = !!opened.get('view');
  const classes = () => {
    const body = document.body;
    const on = lessonOn(), name = on ? value('#lesson-name') : '';
    body.classList.toggle('lesson-on', on);
    if (name !== lastLesson) {
      if (lastLesson) body.classList.remove(`lesson-${lastLesson}`);
      if (name) body.classList.add(`lesson-${name}`);
      body.classList.remove('live');  // a new lesson opens on its own screen
      lastLesson = name;
    }
    const present = body.classList.contains('present');
    if (present !== wasPresent) {
      wasPresent = present;
      const view = selectedTab('#main-tabs');
      const button = (id) => document.querySelector(`#tab-${id}-button`);
      if (present && !keepView && view !== 'map' && button('map')) button('map').click();
      keepView = false;  // the address's view is kept when the page opens in the layout, not later
      if (!present && view === 'map') {
        const other = document.querySelector('#main-tabs button[role=tab]:not(#tab-map-button)');
        if (other) other.click();
      }
      if (window.vaescopeResizePlots) window.vaescopeResizePlots();
    }
  };
  // The presenter layout never scrolls: when a screen (a lesson's own, an Explore view, the
  // side-by-side view) comes out taller than the window, its plots give up the difference, shared by
  // the rows they stand in (the Explore map is fitted by bridge.js).
  const fitScreen = () => {
    if (!window.Plotly || !document.body.classList.contains('present')) return;
    const over = document.scrollingElement.scrollHeight - window.innerHeight;
    const rows = new Map();
    document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
      if (gd.offsetParent === null || !gd._fullLayout || gd.closest('#latent-map, .offscreen')) return;
      if (gd.__vaescopeTall === undefined || gd.__vaescopeDrawn !== gd.data) {  // a new drawing: its own height
        gd.__vaescopeTall = gd._fullLayout.height;
        gd.__vaescopeDrawn = gd.data;
      }
      const top = Math.round(gd.getBoundingClientRect().top + window.scrollY);
      rows.set(top, [...(rows.get(top) || []), gd]);
    });
    if (!rows.size || (over <= 0 && over > -24)) return;
    // too tall: every row gives up its share; room to spare: shrunk plots take it back (never past
    // the height they were drawn with)
    const change = over > 0 ? -(Math.ceil(over / rows.size) + 2) : Math.floor(-over / rows.size) - 8;
    for (const plots of rows.values()) {
      for (const gd of plots) {
        const now = gd._fullLayout.height;
        const height = Math.min(gd.__vaescopeTall, Math.max(160, now + change));
        if (Math.abs(height - now) >= 4) window.Plotly.relayout(gd, {height: height});
      }
    }
  };
  // The Explore map in the presenter layout: slim margins and title, so the points get the room.
  const presentMap = () => {
    const gd = document.querySelector('#latent-map .js-plotly-plot');
    if (!window.Plotly || !gd || !gd.data || !document.body.classList.contains('present') ||
        gd.__vaescopeSlim === gd.data || gd.offsetParent === null) return;
    gd.__vaescopeSlim = gd.data;
    window.Plotly.relayout(gd, {'margin.t': 36, 'margin.b': 28, 'margin.l': 36, 'margin.r': 8,
                                'title.font.size': 18, 'title.y': 0.985});
  };
  // Plotly's own ▶ Play / ❚❚ Pause buttons and frame slider call Plotly.animate and drop its promise;
  // an animation cut short by the next one (Pause, a slider step) rejects it with no reason, which
  // the page would report as an uncaught error although nothing failed.
  window.addEventListener('unhandledrejection', (event) => {
    if (event.reason === undefined) event.preventDefault();
  });
  setInterval(() => { classes(); write(); fitScreen(); presentMap(); }, 250);
})();
