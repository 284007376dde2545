// vaescope's page script (loaded in <head>): the plotly click bridge and the map's live overlays.
//
// 1. Clicks. gr.Plot has no click event, so this binds plotly_click on the latent map, stores the
//    point (or, on empty space of a 2D plot, the data coordinates) in window.__picked and clicks the
//    hidden #pick-btn, whose listener reads it with a js function.
// 2. Overlays. The slider handler writes the "you are here" trail into the hidden #map-marker box,
//    the interpolation writes its path into #map-path; their values are placed into the map's
//    "you are here", "trail" and "path" traces with Plotly.restyle, without resending the map (the
//    marker once a slider rests, or every second of a long drag: each restyle redraws the map).
// 3. Plots drawn while their tab was hidden get a resize when the tab is shown.
// 4. Hovering a map point shows its image beside the pointer (#hover-thumb, filled by the server).
// 5. In dark mode the plots get dark backgrounds and light text, whatever the server drew.
// 6. The side-by-side view's two maps: a click sends {side, index} through #compare-pick-btn; hovering
//    a point rings the same image on the other map (no round trip); each side's overlay box
//    (#compare-overlays-a / -b: {"trace name": points}) is restyled into that map's named traces.
// 7. Animations. gr.Plot draws with Plotly.react(data, layout, config) and drops a figure's frames;
//    the server sends them in layout.meta.frames (core/timeline.py) and they are added here, once
//    per drawn figure, so the play button and the slider have frames to play.
// 8. Selections. A lasso or box on the latent map (plotly_selected) sends the selected points'
//    customdata (image indices) as window.__selected and clicks the hidden #select-btn; a double
//    click (plotly_deselect) sends an empty selection. The map's rings (search matches, nearest
//    neighbours) come in the hidden #map-overlays box ({"trace name": points}), restyled like 2.
(() => {
  const send = (payload) => {
    window.__picked = JSON.stringify(payload);
    const btn = document.querySelector('#pick-btn');
    if (btn) btn.click();
  };
  const mapDiv = () => document.querySelector('#latent-map .js-plotly-plot');
  const bind = () => {
    const gd = mapDiv();
    if (!gd || gd.__vaescopeBound || typeof gd.on !== 'function') return;
    gd.__vaescopeBound = true;
    let lastPoint = 0, down = null;
    let hoverTimer = null, lastHover = null;
    gd.on('plotly_hover', (ev) => {
      const p = ev && ev.points && ev.points[0];
      const thumb = document.querySelector('#hover-thumb');
      if (!p || !thumb) return;
      const cd = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      if (cd === undefined || cd === null || cd === '') return;
      const e = ev.event || {};
      thumb.style.left = Math.min((e.clientX || 0) + 18, window.innerWidth - 130) + 'px';
      thumb.style.top = Math.min((e.clientY || 0) + 18, window.innerHeight - 130) + 'px';
      thumb.classList.add('shown');
      if (String(cd) === lastHover) return;
      lastHover = String(cd);
      window.__hover = lastHover;
      clearTimeout(hoverTimer);
      // while the page decodes under the pointer itself (decode.js), the thumbnail waits for the pointer
      // to rest: its round trip (Gradio's event handling on the main thread) would hold up the decoding
      const rest = window.vaescopeWebDecode && window.vaescopeWebDecode.ready ? 250 : 60;
      hoverTimer = setTimeout(() => { const b = document.querySelector('#hover-btn'); if (b) b.click(); }, rest);
    });
    gd.on('plotly_unhover', () => {
      const thumb = document.querySelector('#hover-thumb');
      if (thumb) thumb.classList.remove('shown');
    });
    const select = (indices) => {
      window.__selected = JSON.stringify({indices: indices});
      const btn = document.querySelector('#select-btn');
      if (btn) btn.click();
    };
    gd.on('plotly_selected', (ev) => {
      if (!ev || !ev.points) return;  // plotly sends nothing for a click in select mode
      const seen = new Set();
      for (const p of ev.points) {  // _fullData: plotly.py 6's base64 arrays decoded (see findPoint)
        const t = gd._fullData[p.curveNumber];
        const cds = t && t.customdata;
        const cd = cds ? cds[p.pointNumber !== undefined ? p.pointNumber : p.pointIndex] : undefined;
        const v = Array.isArray(cd) ? cd[0] : cd;
        if (v !== undefined && v !== null && v !== '') seen.add(Number(v));
      }
      select(Array.from(seen));
    });
    gd.on('plotly_deselect', () => select([]));
    gd.on('plotly_click', (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (!p) return;
      lastPoint = Date.now();
      const cd = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      if (cd !== undefined && cd !== null && cd !== '') send({kind: 'point', index: Number(cd), t: lastPoint});
      else send({kind: 'xy', x: p.x, y: p.y, t: lastPoint});
    });
    // Empty space: plotly sends no event, so turn a still click on the 2D plot area into data coords.
    gd.addEventListener('mousedown', (e) => { down = {x: e.clientX, y: e.clientY, t: Date.now()}; }, true);
    document.addEventListener('mouseup', (e) => {
      const start = down; down = null;
      if (!start || Math.hypot(e.clientX - start.x, e.clientY - start.y) > 4) return;
      const layout = gd._fullLayout;
      const area = gd.querySelector('.nsewdrag');
      if (!layout || !layout.xaxis || !layout.yaxis || !area || layout.scene) return;
      const r = area.getBoundingClientRect();
      if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) return;
      const x = layout.xaxis.p2c(e.clientX - r.left), y = layout.yaxis.p2c(e.clientY - r.top);
      // plotly emits plotly_click only when its (throttled) hover found a point; on a busy machine the
      // hover can lag the click, so a point under the pointer is looked up here before the spot is
      // taken as empty space
      const near = nearestPoint(gd, e.clientX, e.clientY);
      setTimeout(() => {
        if (lastPoint >= start.t) return;
        send(near !== null ? {kind: 'point', index: near, t: Date.now()} : {kind: 'xy', x: x, y: y, t: Date.now()});
      }, 120);
    }, true);
  };

  // The customdata (image index) of the plotted point within `radius` pixels of a client position on
  // a 2D plot, the nearest one; null when there is none.
  const nearestPoint = (gd, clientX, clientY, radius = 6) => {
    const L = gd._fullLayout, area = gd.querySelector('.nsewdrag');
    if (!L || !L.xaxis || !L.yaxis || !area || L.scene) return null;
    const r = area.getBoundingClientRect();
    let best = null, bestD = radius;
    for (const t of gd._fullData || []) {
      if (!t.customdata || t.visible !== true || !t.x || !t.y) continue;
      for (let i = 0; i < t._length; i++) {
        const d = Math.hypot(r.left + L.xaxis.c2p(t.x[i]) - clientX, r.top + L.yaxis.c2p(t.y[i]) - clientY);
        if (d <= bestD) {
          const cd = Array.isArray(t.customdata[i]) ? t.customdata[i][0] : t.customdata[i];
          if (cd !== undefined && cd !== null && cd !== '') { best = Number(cd); bestD = d; }
        }
      }
    }
    return best;
  };

  const traceIndex = (gd, name) => (gd.data || []).findIndex((t) => t.name === name);
  const columns = (points) => {
    const cols = {x: points.map((p) => p[0]), y: points.map((p) => p[1])};
    if (points.length && points[0].length === 3) cols.z = points.map((p) => p[2]);
    return cols;
  };
  const restyle = (gd, name, points) => restyleAll(gd, {[name]: points});
  // Several named traces in one Plotly.restyle: each call redraws the whole plot (on a WebGL map of
  // 10k points in software rendering, 100+ ms of the page's main thread), so one call, not one each.
  const restyleAll = (gd, named) => {
    if (!window.Plotly) return;
    const update = {x: [], y: []}, indices = [];
    let three = false;
    for (const [name, points] of Object.entries(named)) {
      const i = traceIndex(gd, name);
      if (i < 0) continue;
      const cols = columns(points);
      indices.push(i); update.x.push(cols.x); update.y.push(cols.y);
      if (cols.z) three = true;
      update.z = update.z || [];
      update.z.push(cols.z);
    }
    if (!indices.length) return;
    if (!three) delete update.z;
    window.Plotly.restyle(gd, update, indices);
  };
  // The marker follows a slider once the slider rests (MARKER_REST_MS without a move), and at most
  // every MARKER_EVERY_MS during a long drag: its redraw of the map would otherwise land between the
  // moves and hold up the next one (benchmarks/slider.py).
  const MARKER_REST_MS = 250, MARKER_EVERY_MS = 1000;
  let sliderMoved = 0, markerDrawn = 0;
  document.addEventListener('input', (e) => {
    if (e.target && e.target.closest && e.target.closest('[id^="dim-slider-"]')) sliderMoved = performance.now();
  }, true);
  const markerWaits = () => {
    const now = performance.now();
    return now - sliderMoved < MARKER_REST_MS && now - markerDrawn < MARKER_EVERY_MS;
  };
  // Applied again whenever the box's value or the figure itself (a redraw replaces gd.data) changes.
  const last = {};
  const overlays = () => {
    const gd = mapDiv();
    if (!gd || !gd.data) return;
    for (const [box, traces] of [['#map-marker', ['trail', 'you are here']], ['#map-path', ['path']]]) {
      const el = document.querySelector(`${box} textarea, ${box} input`);
      if (!el) continue;
      if (last[box] && last[box].value === el.value && last[box].data === gd.data) continue;
      if (traces.length === 2 && last[box] && last[box].data === gd.data && markerWaits()) continue;
      last[box] = {value: el.value, data: gd.data};
      let points = [];
      try { points = (JSON.parse(el.value || '{}').points) || []; } catch (err) { points = []; }
      if (traces.length === 2) {
        markerDrawn = performance.now();
        restyleAll(gd, {[traces[0]]: points, [traces[1]]: points.slice(-1)});
      } else {
        restyle(gd, traces[0], points);
      }
    }
    const rings = document.querySelector('#map-overlays textarea, #map-overlays input');
    if (rings && !(last.rings && last.rings.value === rings.value && last.rings.data === gd.data)) {
      last.rings = {value: rings.value, data: gd.data};
      let named = {};
      try { named = JSON.parse(rings.value || '{}') || {}; } catch (err) { named = {}; }
      restyleAll(gd, Object.fromEntries(Object.entries(named).filter(([, points]) => Array.isArray(points))));
    }
  };
  window.vaescopeResizePlots = () => {
    setTimeout(() => {
      document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
        if (window.Plotly && gd.offsetParent !== null) window.Plotly.Plots.resize(gd);
      });
    }, 60);
  };
  const isDark = () => document.body.classList.contains('dark') ||
    !!document.querySelector('gradio-app.dark, .gradio-container.dark');
  const DARK = {paper_bgcolor: 'rgba(0,0,0,0)', plot_bgcolor: '#1f2430', 'font.color': '#e6e6e6',
                'xaxis.gridcolor': '#3a3f4b', 'yaxis.gridcolor': '#3a3f4b', 'xaxis.zerolinecolor': '#555b68',
                'yaxis.zerolinecolor': '#555b68', 'scene.bgcolor': '#1f2430'};
  const theme = () => {
    if (!window.Plotly || !isDark()) return;
    document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
      if (!gd.data || gd.__vaescopeDark === gd.data) return;  // each drawing once (a redraw replaces gd.data)
      gd.__vaescopeDark = gd.data;
      window.Plotly.relayout(gd, DARK);
    });
  };
  // Presenter layout: the map fills the window's height below its top edge, so nothing scrolls.
  const fitMap = () => {
    const gd = mapDiv();
    if (!gd || !gd.layout || !window.Plotly) return;
    if (gd.__vaescopeHeight === undefined) gd.__vaescopeHeight = gd.layout.height;
    const present = document.body.classList.contains('present');
    if (gd.offsetParent === null) return;  // a hidden view: fitted when it shows
    const top = gd.getBoundingClientRect().top + window.scrollY;
    // what the presenter layout places below the map (style.css: --map-reserve) stays on screen too
    const reserve = parseFloat(getComputedStyle(gd).getPropertyValue('--map-reserve')) || 0;
    const target = present ? Math.max(240, Math.floor(window.innerHeight - top - 24 - reserve)) : gd.__vaescopeHeight;
    if (gd.__vaescopeFitted === gd.data && Math.abs((gd.layout.height || 0) - target) < 4) return;
    gd.__vaescopeFitted = gd.data;
    if (!present) gd.__vaescopeHeight = gd.layout.height;
    if (target && Math.abs((gd.layout.height || 0) - target) >= 4) window.Plotly.relayout(gd, {height: target});
  };
  // -- the side-by-side view --
  const sides = ['a', 'b'];
  const compareDiv = (side) => document.querySelector(`#compare-map-${side} .js-plotly-plot`);
  // [x, y] of the data point whose customdata is index, or null. It reads _fullData: plotly.py 6 sends
  // numpy arrays base64-encoded ({dtype, bdata}), which gd.data keeps as sent and _fullData decodes.
  const findPoint = (gd, index) => {
    for (const t of gd._fullData || []) {
      if (!t.customdata || !t.x || t.visible !== true) continue;
      for (let i = 0; i < t._length; i++) {
        const cd = Array.isArray(t.customdata[i]) ? t.customdata[i][0] : t.customdata[i];
        if (Number(cd) === index) return [t.x[i], t.y[i]];
      }
    }
    return null;
  };
  const bindCompare = (side) => {
    const gd = compareDiv(side);
    if (!gd || gd.__vaescopeBound || typeof gd.on !== 'function') return;
    gd.__vaescopeBound = true;
    const other = sides.find((s) => s !== side);
    const pointIndex = (ev) => {
      const p = ev && ev.points && ev.points[0];
      const cd = p && (Array.isArray(p.customdata) ? p.customdata[0] : p.customdata);
      return cd === undefined || cd === null || cd === '' ? null : Number(cd);
    };
    let clicked = 0, down = null;
    const pick = (index) => {
      clicked = Date.now();
      window.__comparePicked = JSON.stringify({kind: 'point', side: side, index: index, t: clicked});
      const btn = document.querySelector('#compare-pick-btn');
      if (btn) btn.click();
    };
    gd.on('plotly_click', (ev) => { const index = pointIndex(ev); if (index !== null) pick(index); });
    gd.addEventListener('mousedown', (e) => { down = {x: e.clientX, y: e.clientY, t: Date.now()}; }, true);
    gd.addEventListener('mouseup', (e) => {  // a point plotly's lagging hover missed (see the map's)
      const start = down; down = null;
      if (!start || Math.hypot(e.clientX - start.x, e.clientY - start.y) > 4) return;
      const near = nearestPoint(gd, e.clientX, e.clientY);
      if (near !== null) setTimeout(() => { if (clicked < start.t) pick(near); }, 120);
    }, true);
    gd.on('plotly_hover', (ev) => {
      const index = pointIndex(ev), target = compareDiv(other);
      if (index === null || !target) return;
      const xy = findPoint(target, index);
      restyle(target, 'linked', xy ? [xy] : []);
    });
    gd.on('plotly_unhover', () => { const target = compareDiv(other); if (target) restyle(target, 'linked', []); });
  };
  const lastCompare = {};
  const compareOverlays = () => {
    for (const side of sides) {
      const gd = compareDiv(side);
      const el = document.querySelector(`#compare-overlays-${side} textarea, #compare-overlays-${side} input`);
      if (!gd || !gd.data || !el) continue;
      const seen = lastCompare[side];
      if (seen && seen.value === el.value && seen.data === gd.data) continue;
      lastCompare[side] = {value: el.value, data: gd.data};
      let traces = {};
      try { traces = JSON.parse(el.value || '{}') || {}; } catch (err) { traces = {}; }
      restyleAll(gd, Object.fromEntries(Object.entries(traces).filter(([, points]) => Array.isArray(points))));
    }
  };
  // plotly.py 6 sends numpy arrays as {dtype, bdata} (base64). Plotly.react decodes them in a figure's
  // data, but frames added with Plotly.addFrames are kept as sent, and animating to one read an
  // undefined x[0] (a page error, and an empty map): decode them to typed arrays first.
  const TYPED = {f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array,
                 u2: Uint16Array, i1: Int8Array, u1: Uint8Array, u1c: Uint8ClampedArray};
  const decoded = (value) => {
    if (Array.isArray(value)) return value.map(decoded);
    if (!value || typeof value !== 'object') return value;
    if (typeof value.bdata === 'string' && TYPED[value.dtype]) {
      const bytes = Uint8Array.from(atob(value.bdata), (c) => c.charCodeAt(0));
      return new TYPED[value.dtype](bytes.buffer);
    }
    const out = {};
    for (const [key, inner] of Object.entries(value)) out[key] = decoded(inner);
    return out;
  };
  const frames = () => {
    if (!window.Plotly) return;
    document.querySelectorAll('.js-plotly-plot').forEach((gd) => {
      const meta = gd.layout && gd.layout.meta;
      if (!meta || !Array.isArray(meta.frames) || gd.__vaescopeFramesOf === meta) return;
      gd.__vaescopeFramesOf = meta;
      const had = (gd._transitionData && gd._transitionData._frames) || [];
      const added = had.length ? window.Plotly.deleteFrames(gd) : Promise.resolve();
      Promise.resolve(added).then(() => window.Plotly.addFrames(gd, decoded(meta.frames)));
    });
  };
  setInterval(() => {
    bind(); overlays(); theme(); fitMap(); frames();
    sides.forEach(bindCompare); compareOverlays();
  }, 100);
})();
