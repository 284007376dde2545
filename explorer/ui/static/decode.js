// vaescope's page decoder (loaded in <head> after bridge.js and page.js): the model's decoder runs in
// this page, so a pointer or slider move shows its image without a round trip to the server.
//
// 1. The server says in the hidden #web-decoder box which decoder the page may fetch
//    ({key, url, latent_dim, image_shape}) or why it decodes itself ({key, url: null, why}). The
//    decoder is an ONNX graph (explorer/core/webdecoder.py); it runs in onnxruntime-web's
//    WebAssembly backend, vendored in static/ort/ and served by the explorer at vaescope/ort/ (no
//    other site is asked for anything). One thread, SIMD; where the browser lacks WebAssembly SIMD,
//    the decoder fails to load, or the server refuses it (larger than MAX_WEB_DECODER_BYTES), the
//    server decodes as before, and the note under the map says why. ?decode=server forces that.
// 2. The map: moving the pointer over a 2D PCA map decodes the code under it, code = mean +
//    x * components[0] + y * components[1] (from #web-map, sent on every drawing: the directions
//    the map does not show are held at the evaluation codes' mean, as a click on empty space does),
//    with x, y the pointer's data coordinates (plotly's axis p2d). The image shows beside the
//    pointer in #pointer-decoded. Where the page does not decode, the spot goes to the server
//    (#pointer-btn, answered in #pointer-image), for a layer map of a hierarchical model too.
// 3. The traversal: #traversal-code-json holds the current code, its class and the dimension each slider
//    moves. A slider's input event sets that coordinate and decodes in the page at once, drawn on a
//    canvas over #traversal-image; the server's own answer (the image, the note, the map's marker)
//    still follows for every move, and is what shows once the code changes any other way.
// 4. window.vaescopeWebDecode: {ready, key, why, decode(z, y) -> Promise<number[]>, last: the last
//    decoded {kind, z, y, pixels}, times: [{kind, ms}] from the input event to the image drawn}.
(() => {
  const forcedServer = new URLSearchParams(window.location.search).get('decode') === 'server';
  const SIMD = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 10, 30, 1, 28, 0, 65, 0,
    253, 15, 253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 253, 186, 1, 26, 11]);
  const MAX_TIMES = 2000;
  const api = window.vaescopeWebDecode = {ready: false, key: null, why: '', times: [], last: null,
                                          decode: null, mode: forcedServer ? 'server' : 'page'};
  const url = (path) => new URL(path, document.baseURI).href;
  const boxValue = (id) => {
    const el = document.querySelector(`#${id} textarea, #${id} input`);
    return el ? el.value : '';
  };
  const parse = (text) => { try { return JSON.parse(text || 'null'); } catch (err) { return null; } };

  const style = document.createElement('style');
  style.textContent = `
    #pointer-decoded, #pointer-image { position: fixed !important; z-index: 1001; pointer-events: none;
      display: none; width: 112px !important; min-width: 0 !important; padding: 2px !important;
      background: var(--background-fill-primary, #fff); box-shadow: 0 2px 8px rgba(0, 0, 0, 0.35); }
    #pointer-decoded.shown, #pointer-image.shown { display: block; }
    #pointer-decoded canvas, #traversal-canvas { image-rendering: pixelated; display: block; }
    #pointer-decoded canvas { width: 108px; height: 108px; }
    #traversal-canvas { position: absolute; pointer-events: none; }
    #web-decode-box { font-size: 0.85em; opacity: 0.8; min-height: 0 !important; }`;
  document.head.appendChild(style);

  // -- the runtime and the model's decoder --
  let runtime = null;  // a promise of window.ort
  const loadRuntime = () => {
    if (runtime) return runtime;
    runtime = new Promise((resolve, reject) => {
      if (typeof WebAssembly !== 'object' || !WebAssembly.validate(SIMD)) {
        reject(new Error('this browser has no WebAssembly SIMD'));
        return;
      }
      const script = document.createElement('script');
      script.src = url('vaescope/ort/ort.wasm-core.min.js');
      script.onload = () => {
        const ort = window.ort;
        if (!ort) { reject(new Error('the page could not start onnxruntime-web')); return; }
        ort.env.wasm.numThreads = 1;
        ort.env.wasm.simd = true;
        ort.env.wasm.proxy = false;
        ort.env.wasm.wasmPaths = url('vaescope/ort/');
        ort.env.logLevel = 'error';
        resolve(ort);
      };
      script.onerror = () => reject(new Error('the page could not load onnxruntime-web from the server'));
      document.head.appendChild(script);
    });
    return runtime;
  };

  let manifestText = null, session = null, manifest = null, generation = 0;
  let queue = Promise.resolve();  // one run at a time: runs of one session never overlap
  const run = (z, y) => {
    const s = session, m = manifest;
    const job = queue.then(async () => {
      const ort = window.ort;
      const feeds = {z: new ort.Tensor('float32', Float32Array.from(z), [1, m.latent_dim])};
      if (s.inputNames.includes('condition')) feeds.condition = new ort.Tensor('int64', BigInt64Array.from([BigInt(y | 0)]), [1]);
      const out = await s.run(feeds);
      return out[s.outputNames[0]].data;
    });
    queue = job.catch(() => null);
    return job;
  };
  api.decode = async (z, y) => {
    if (!api.ready) throw new Error(api.why || 'the page decoder is not ready');
    return Array.from(await run(z, y));
  };

  const setNote = () => {
    const box = document.querySelector('#web-decode-box');
    if (!box) return;
    let text = '';
    if (manifest && api.ready) {
      text = `Decoding under the pointer and the sliders runs in this page (onnxruntime-web, WebAssembly; ` +
             `the decoder is ${(manifest.bytes / 2 ** 20).toFixed(1)} MB).`;
    } else if (manifest && api.why) {
      text = `In-page decoding is off: ${api.why}` + (/server/.test(api.why) ? '' : ' The server decodes instead.');
    } else if (manifest && manifest.url) {
      text = 'Loading the decoder into the page…';
    }
    const map = parse(boxValue('web-map'));
    if (text && map && map.key === api.key && !map.mean && !map.server && map.why && map.why !== 'no map is drawn') {
      text += ` The map decodes under the pointer on a 2D PCA map (${map.why}).`;
    }
    let el = box.querySelector('.web-decode-note');
    if (!el) {
      el = document.createElement('div');
      el.className = 'web-decode-note';
      box.appendChild(el);
    }
    if (el.textContent !== text) el.textContent = text;
  };

  const load = async (m) => {
    const mine = ++generation;
    api.ready = false; session = null; manifest = m; api.key = m ? m.key : null; api.why = '';
    hideAll();
    if (!m) { setNote(); return; }
    if (!m.url) { api.why = m.why || 'the server decodes this model'; setNote(); return; }
    if (forcedServer) { api.why = 'the address asks the server to decode (?decode=server).'; setNote(); return; }
    setNote();
    try {
      const ort = await loadRuntime();
      const response = await fetch(url(m.url));
      if (!response.ok) throw new Error(`the server answered ${response.status} for the decoder`);
      if ((response.headers.get('content-type') || '').startsWith('application/json')) {
        throw new Error((await response.json()).refused || 'the server keeps this decoder');
      }
      const bytes = new Uint8Array(await response.arrayBuffer());
      const s = await ort.InferenceSession.create(bytes, {executionProviders: ['wasm'], graphOptimizationLevel: 'all'});
      if (mine !== generation) { s.release && s.release(); return; }
      session = s; m.bytes = bytes.length; api.ready = true;
    } catch (err) {
      if (mine !== generation) return;
      const words = String((err && err.message) || err).replace(/\.$/, '');
      api.why = `${words}.`;
    }
    setNote();
  };

  // -- drawing --
  const toImageData = (pixels, shape) => {
    const [c, h, w] = shape, n = h * w;
    const out = new ImageData(w, h), rgba = out.data;
    const byte = (v) => Math.floor(Math.min(Math.max(v, 0), 1) * 255 + 0.5);
    for (let i = 0; i < n; i++) {
      const r = byte(pixels[i]);
      rgba[4 * i] = r;
      rgba[4 * i + 1] = c === 1 ? r : byte(pixels[n + i]);
      rgba[4 * i + 2] = c === 1 ? r : byte(pixels[2 * n + i]);
      rgba[4 * i + 3] = 255;
    }
    return out;
  };
  const paint = (canvas, pixels) => {
    const [, h, w] = manifest.image_shape;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    canvas.getContext('2d').putImageData(toImageData(pixels, manifest.image_shape), 0, 0);
  };
  // Decode for one consumer (the map, the traversal): at most one run in flight each; a move that
  // comes while one runs waits, and only the newest waiting one runs (always the last).
  const consumer = (kind, draw) => {
    let busy = false, next = null;
    const go = async (job) => {
      busy = true;
      const key = api.key;
      try {
        const started = performance.now();
        const pixels = await run(job.z, job.y);
        if (api.key === key && api.ready) {
          draw(pixels, job);
          const now = performance.now();
          api.last = {kind, z: Array.from(job.z), y: job.y, pixels: pixels};
          const entry = {kind, ms: now - job.t, decode_ms: now - started, frame_ms: null};
          requestAnimationFrame(() => { entry.frame_ms = performance.now() - job.t; });
          api.times.push(entry);
          if (api.times.length > MAX_TIMES) api.times.splice(0, api.times.length - MAX_TIMES);
        }
      } catch (err) {
        api.ready = false;
        api.why = `decoding in the page failed (${(err && err.message) || err}).`;
        setNote();
      }
      busy = false;
      if (next) { const n = next; next = null; go(n); }
    };
    return (job) => { if (busy) next = job; else go(job); };
  };

  // -- the map --
  const mapDiv = () => document.querySelector('#latent-map .js-plotly-plot');
  let mapState = null, mapText = null;
  const pointerBox = () => {
    let box = document.querySelector('#pointer-decoded');
    if (!box) {
      box = document.createElement('div');
      box.id = 'pointer-decoded';
      box.appendChild(document.createElement('canvas'));
      document.body.appendChild(box);
    }
    return box;
  };
  const place = (el, clientX, clientY) => {  // above and left of the pointer (the hover thumbnail is below right)
    el.style.left = Math.max(4, clientX - 130) + 'px';
    el.style.top = Math.max(4, clientY - 130) + 'px';
  };
  const mapDecode = consumer('map', (pixels, job) => {
    const box = pointerBox();
    paint(box.querySelector('canvas'), pixels);
    if (job.inside()) { place(box, job.clientX, job.clientY); box.classList.add('shown'); }
  });
  let pointerAt = null;
  const hideAll = () => {
    const box = document.querySelector('#pointer-decoded');
    if (box) box.classList.remove('shown');
    const img = document.querySelector('#pointer-image');
    if (img) img.classList.remove('shown');
    const canvas = document.querySelector('#traversal-canvas');
    if (canvas) canvas.style.display = 'none';
  };
  const onMapMove = (e) => {
    const gd = mapDiv(), L = gd && gd._fullLayout;
    const area = gd && gd.querySelector('.nsewdrag');
    if (!L || !L.xaxis || !L.yaxis || !area || L.scene || !mapState || mapState.key !== api.key) return;
    const r = area.getBoundingClientRect();
    const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
    pointerAt = inside ? {x: e.clientX, y: e.clientY} : null;
    if (!inside) { hidePointer(); return; }
    const toData = (axis, px) => (typeof axis.p2d === 'function' ? axis.p2d(px) : axis.p2c(px));
    const x = toData(L.xaxis, e.clientX - r.left), y = toData(L.yaxis, e.clientY - r.top);
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    if (api.ready && mapState.mean) {
      const m = mapState.mean, c = mapState.components, z = new Float32Array(m.length);
      for (let d = 0; d < m.length; d++) z[d] = m[d] + x * c[0][d] + y * c[1][d];
      const code = codeState && codeState.key === api.key ? codeState : null;
      mapDecode({z, y: code ? code.y : 0, t: e.timeStamp, clientX: e.clientX, clientY: e.clientY,
                 inside: () => pointerAt !== null});
    } else if (mapState.server) {
      window.__pointerDecode = JSON.stringify({x, y, t: Date.now()});
      const img = document.querySelector('#pointer-image');
      if (img) { place(img, e.clientX, e.clientY); }
      const btn = document.querySelector('#pointer-btn');
      if (btn) btn.click();
    }
  };
  const hidePointer = () => {
    pointerAt = null;
    const box = document.querySelector('#pointer-decoded');
    if (box) box.classList.remove('shown');
    const img = document.querySelector('#pointer-image');
    if (img) img.classList.remove('shown');
  };
  // the server's image shows once it has one for this spot
  const watchServerImage = () => {
    const img = document.querySelector('#pointer-image');
    if (!img) return;
    const has = !!img.querySelector('img');
    img.classList.toggle('shown', has && pointerAt !== null && !(api.ready && mapState && mapState.mean));
  };
  const bindMap = () => {
    const gd = mapDiv();
    if (!gd || gd.__vaescopeDecodeBound) return;
    gd.__vaescopeDecodeBound = true;
    // pointerrawupdate (Chromium, secure pages: localhost is one) is dispatched as the pointer moves;
    // mousemove waits for the next animation frame
    gd.addEventListener('onpointerrawupdate' in window ? 'pointerrawupdate' : 'mousemove', onMapMove, true);
    gd.addEventListener('mouseleave', hidePointer, true);
  };

  // -- the traversal --
  let codeState = null, codeText = null;
  const traversalCanvas = () => {
    const img = document.querySelector('#traversal-image img');
    if (!img || !img.parentElement) return null;
    const parent = img.parentElement;
    let canvas = document.querySelector('#traversal-canvas');
    if (!canvas || canvas.parentElement !== parent) {
      if (canvas) canvas.remove();
      canvas = document.createElement('canvas');
      canvas.id = 'traversal-canvas';
      if (getComputedStyle(parent).position === 'static') parent.style.position = 'relative';
      parent.appendChild(canvas);
    }
    // over the picture as the <img> shows it (object-fit: contain keeps its aspect)
    const box = img.getBoundingClientRect(), outer = parent.getBoundingClientRect();
    let w = box.width, h = box.height, left = box.left - outer.left, top = box.top - outer.top;
    if (getComputedStyle(img).objectFit === 'contain' && img.naturalWidth && img.naturalHeight) {
      const s = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
      w = img.naturalWidth * s; h = img.naturalHeight * s;
      left += (box.width - w) / 2; top += (box.height - h) / 2;
    }
    Object.assign(canvas.style, {left: `${left}px`, top: `${top}px`, width: `${w}px`, height: `${h}px`});
    return canvas;
  };
  const sliderDecode = consumer('slider', (pixels) => {
    const canvas = traversalCanvas();
    if (!canvas) return;
    paint(canvas, pixels);
    canvas.style.display = 'block';
  });
  const onSlider = (e) => {
    const input = e.target;
    if (!input || input.tagName !== 'INPUT') return;
    const holder = input.closest('[id^="dim-slider-"]');
    if (!holder) return;
    const slot = Number(holder.id.slice('dim-slider-'.length));
    const value = Number(input.value);
    const code = codeState;
    if (!api.ready || !code || !code.z || code.key !== api.key || !Array.isArray(code.dims) ||
        !(slot < code.dims.length) || input.value === '' || !Number.isFinite(value)) return;
    code.z[code.dims[slot]] = value;
    sliderDecode({z: Float32Array.from(code.z), y: code.y, t: e.timeStamp});
  };
  document.addEventListener('input', onSlider, true);

  // -- the boxes the server writes --
  setInterval(() => {
    const text = boxValue('web-decoder');
    if (text !== manifestText) { manifestText = text; load(parse(text)); }
    const map = boxValue('web-map');
    if (map !== mapText) { mapText = map; mapState = parse(map); hidePointer(); setNote(); }
    const code = boxValue('traversal-code-json');
    if (code !== codeText) {
      codeText = code; codeState = parse(code);
      const canvas = document.querySelector('#traversal-canvas');
      if (canvas) canvas.style.display = 'none';  // the server's image is the code's, until a slider moves
    }
    bindMap();
    watchServerImage();
  }, 100);
})();
