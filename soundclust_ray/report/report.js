(function(){
const D = JSON.parse(document.getElementById('report-data').textContent);
const CFG = {responsive: true, displaylogo: false};
// The modebar floats in the top 30 px of every figure: titles and legends start below it.
const TOP = 64;
const LAYOUT = {margin: {l: 60, r: 20, t: TOP, b: 50}, plot_bgcolor: '#F0F2F5',
  hoverlabel: {align: 'left'}};
function el(id){ return document.getElementById(id); }
function layout(title, extra){
  return Object.assign({}, LAYOUT, {title: {text: title, x: 0, xref: 'container', xanchor: 'left',
    y: 1, yref: 'container', yanchor: 'top', pad: {l: 12, t: 34}, font: {size: 14}}}, extra);
}
function empty(id, msg){ const e = el(id); if (!e) return; e.innerHTML = '';
  const d = document.createElement('div'); d.className = 'empty'; d.textContent = msg; e.appendChild(d); }

async function loadPlotly(){
  if (typeof DecompressionStream === 'undefined') {
    throw new Error('this browser cannot inflate the embedded plotly.js (DecompressionStream: ' +
      'Chrome 80, Firefox 113, Safari 16.4 or newer)');
  }
  const b64 = el('plotly-bundle').textContent.trim();
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  const code = await new Response(stream).text();
  const s = document.createElement('script'); s.textContent = code; document.head.appendChild(s);
}

const P = D.player;
let current = null;
function highlight(){
  if (current === null) return;
  const near = P.neighbours.rows[current] || [];
  D.projections.forEach(p => {
    const gd = el('map-' + p.id);
    if (!p.x || !gd.data) return;
    const last = gd.data.length - 1;
    Plotly.restyle(gd, {x: [near.map(j => p.x[j]).concat([p.x[current]])],
      y: [near.map(j => p.y[j]).concat([p.y[current]])],
      'marker.size': [near.map(() => 12).concat([20])]}, [last]);
  });
}
function select(i){
  current = i;
  el('player').hidden = false;
  const km = D.colorings.kmeans;
  el('now-playing').textContent = P.names[i] + (km ? ' · k-means ' + km.categories[km.codes[i]] : '');
  const audio = el('audio'), status = el('audio-status');
  status.textContent = '';
  if (P.audio[i]) {
    audio.preload = 'metadata'; audio.src = P.audio[i];
    audio.play().catch(() => { status.textContent = 'press play to listen'; });
  } else {
    audio.removeAttribute('src'); audio.load();
    status.textContent = 'no local audio file for this track (remote corpus or OUT)';
  }
  const list = el('neighbours'); list.innerHTML = '';
  (P.neighbours.rows[i] || []).forEach((j, r) => {
    const li = document.createElement('li'), b = document.createElement('button');
    b.type = 'button'; b.textContent = P.names[j];
    b.addEventListener('click', () => select(j));
    const d = document.createElement('span'); d.className = 'muted';
    d.textContent = ' ' + P.neighbours.dist[i][r];
    li.appendChild(b); li.appendChild(d); list.appendChild(li);
  });
  highlight();
}
el('audio').addEventListener('error', () => {
  if (current !== null && P.audio[current]) el('audio-status').textContent =
    'cannot play ' + decodeURIComponent(P.audio[current]) +
    ': the file moved, or this browser does not play its format';
});

function drawMaps(key){
  const c = D.colorings[key]; if (!c) return;
  const groups = c.categories.map(() => []);
  c.codes.forEach((code, i) => groups[code].push(i));
  const size = D.n_points > 5000 ? 4 : (D.n_points > 500 ? 6 : 9);
  D.projections.forEach(p => {
    const id = 'map-' + p.id;
    if (!p.x) { empty(id, p.title + ': ' + p.reason); return; }
    const traces = groups.map((idx, g) => ({
      type: 'scatter', mode: 'markers', name: c.categories[g], customdata: idx,
      x: idx.map(i => p.x[i]), y: idx.map(i => p.y[i]), text: idx.map(i => D.hover[i]),
      hovertemplate: '%{text}<extra>%{fullData.name}</extra>',
      marker: {color: c.colors[g], size: size, opacity: 0.85, line: {width: 0}}}));
    traces.push({type: 'scatter', mode: 'markers', name: 'selected', showlegend: false,
      hoverinfo: 'skip', x: [], y: [], marker: {symbol: 'circle-open', color: '#1d2330',
        line: {width: 2}}});
    Plotly.react(id, traces, layout(p.title + ' — ' + c.title, {
      xaxis: {title: {text: p.xlabel}, zeroline: false}, yaxis: {title: {text: p.ylabel}, zeroline: false},
      legend: {title: {text: c.title}, itemsizing: 'constant', y: 1, yanchor: 'top'}}), CFG).then(gd => {
      if (!gd._soundclustClick) {
        gd.on('plotly_click', ev => { const pt = ev.points[0];
          if (pt && Number.isInteger(pt.customdata)) select(pt.customdata); });
        gd._soundclustClick = true;
      }
      highlight();
    });
  });
}

function drawCharts(){
  const sizes = Object.entries(D.sizes);
  if (sizes.length) {
    Plotly.newPlot('fig-sizes', sizes.map(([name, s]) => ({type: 'bar', name: name,
      x: s.clusters.map(c => name + ' ' + c), y: s.counts,
      marker: {color: s.clusters.map(c => c === '-1' ? '#7f7f7f' : (name === 'kmeans' ? '#2E91E5' : '#E15F99'))}})),
      layout('tracks per cluster', {yaxis: {title: {text: 'tracks'}, rangemode: 'tozero'},
        legend: {orientation: 'h', x: 1, xanchor: 'right', y: 1.02, yanchor: 'bottom'}}), CFG);
  } else { empty('fig-sizes', 'no clusters'); }
  if (D.k_curve && el('fig-kcurve')) drawKCurve();
  if (D.contingency && el('fig-contingency')) drawContingency();
  if (D.sanity && el('fig-sanity')) {
    Plotly.newPlot('fig-sanity', [{type: 'bar', x: D.sanity.labels, y: D.sanity.mean,
      error_y: {type: 'data', array: D.sanity.std, visible: true}, marker: {color: ['#E15F99', '#2E91E5']}}],
      layout('mean pairwise cosine', {yaxis: {title: {text: 'cosine'}, range: [-1, 1], dtick: 0.5}}), CFG);
  }
  if (D.timings.stages.length) {
    Plotly.newPlot('fig-timings', [{type: 'bar', orientation: 'h', y: D.timings.stages,
      x: D.timings.seconds, marker: {color: '#2E91E5'}}],
      layout('seconds per stage', {xaxis: {title: {text: 'seconds'}}, yaxis: {autorange: 'reversed',
        automargin: true}}), CFG);
  } else { empty('fig-timings', 'no timings'); }
}

function drawKCurve(){
  const kc = D.k_curve;
  Plotly.newPlot('fig-kcurve', [
    {type: 'scatter', mode: 'lines+markers', name: 'silhouette', x: kc.k, y: kc.silhouette},
    {type: 'scatter', mode: 'lines+markers', name: 'inertia', x: kc.k, y: kc.inertia,
     yaxis: 'y2', line: {dash: 'dot'}}],
    layout('silhouette and inertia per k', {
      xaxis: {title: {text: 'k'}, tickmode: 'linear', dtick: kc.k.length > 20 ? 5 : 1},
      yaxis: {title: {text: 'silhouette'}, tickformat: '.2f', nticks: 6, automargin: true},
      yaxis2: {title: {text: 'inertia'}, overlaying: 'y', side: 'right', showgrid: false,
        tickmode: 'auto', tickformat: '~s', rangemode: 'tozero', automargin: true},
      legend: {orientation: 'h', x: 1, xanchor: 'right', y: 1.02, yanchor: 'bottom'},
      shapes: kc.best ? [{type: 'line', x0: kc.best, x1: kc.best, yref: 'paper',
        y0: 0, y1: 1, line: {color: '#E15F99', dash: 'dash'}}] : []}), CFG);
}

function drawContingency(){
  const ct = D.contingency;
  const z = ct.counts, cells = z.length * (z[0] || []).length;
  el('fig-contingency').style.height = Math.max(300, 26 * ct.labels.length + TOP + 60) + 'px';
  Plotly.newPlot('fig-contingency', [{type: 'heatmap', z: z,
    x: ct.clusters.map(c => 'k' + c), y: ct.labels, colorscale: [[0, '#f7fbff'], [1, '#08306b']],
    text: z.map(row => row.map(v => v ? String(v) : '')), texttemplate: cells <= 2500 ? '%{text}' : '',
    textfont: {size: 11}, colorbar: {title: {text: 'tracks'}},
    hovertemplate: '%{y} · cluster %{x}: %{z}<extra></extra>'}],
    layout('tracks per label and cluster', {xaxis: {title: {text: 'k-means cluster'}, type: 'category'},
      yaxis: {type: 'category', automargin: true}}), CFG);
}

function start(){
  const sel = el('colorby');
  Object.keys(D.colorings).forEach(k => { const o = document.createElement('option');
    o.value = k; o.innerHTML = D.colorings[k].title; sel.appendChild(o); });
  sel.value = D.default_color; sel.addEventListener('change', () => drawMaps(sel.value));
  drawMaps(D.default_color);
  drawCharts();
}

loadPlotly().then(start, err => {
  const e = el('load-error'); e.hidden = false; e.textContent = 'The charts cannot be drawn: ' + err.message;
});
})();
