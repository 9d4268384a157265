(function(){
const D = JSON.parse(document.getElementById('report-data').textContent);
const CFG = {responsive: true, displaylogo: false};
const LAYOUT = {margin: {l: 50, r: 10, t: 40, b: 40}, plot_bgcolor: '#F0F2F5',
  legend: {itemsizing: 'constant'}, hoverlabel: {align: 'left'}};
function el(id){ return document.getElementById(id); }
function empty(id, msg){ const e = el(id); if (!e) return; e.innerHTML = '';
  const d = document.createElement('div'); d.className = 'empty'; d.textContent = msg; e.appendChild(d); }
function drawMaps(key){
  const c = D.colorings[key]; if (!c) return;
  const groups = c.categories.map(() => []);
  c.codes.forEach((code, i) => groups[code].push(i));
  const size = D.n_points > 5000 ? 4 : (D.n_points > 500 ? 6 : 9);
  D.projections.forEach(p => {
    const id = 'map-' + p.id;
    if (!p.x) { empty(id, p.title + ': ' + p.reason); return; }
    const traces = groups.map((idx, g) => ({
      type: 'scatter', mode: 'markers', name: c.categories[g],
      x: idx.map(i => p.x[i]), y: idx.map(i => p.y[i]), text: idx.map(i => D.hover[i]),
      hovertemplate: '%{text}<extra>%{fullData.name}</extra>',
      marker: {color: c.colors[g], size: size, opacity: 0.85, line: {width: 0}}}));
    const layout = Object.assign({}, LAYOUT, {title: {text: p.title + ' — ' + c.title},
      xaxis: {title: {text: p.xlabel}, zeroline: false}, yaxis: {title: {text: p.ylabel}, zeroline: false},
      legend: {title: {text: c.title}, itemsizing: 'constant'}});
    Plotly.react(id, traces, layout, CFG);
  });
}
const sel = el('colorby');
Object.keys(D.colorings).forEach(k => { const o = document.createElement('option');
  o.value = k; o.innerHTML = D.colorings[k].title; sel.appendChild(o); });
sel.value = D.default_color; sel.addEventListener('change', () => drawMaps(sel.value));
drawMaps(D.default_color);
const sizes = Object.entries(D.sizes);
if (sizes.length) {
  Plotly.newPlot('fig-sizes', sizes.map(([name, s]) => ({type: 'bar', name: name,
    x: s.clusters.map(c => name + ' ' + c), y: s.counts,
    marker: {color: s.clusters.map(c => c === '-1' ? '#7f7f7f' : (name === 'kmeans' ? '#2E91E5' : '#E15F99'))}})),
    Object.assign({}, LAYOUT, {yaxis: {title: {text: 'tracks'}}, showlegend: true}), CFG);
} else { empty('fig-sizes', 'no clusters'); }
if (D.k_curve && el('fig-kcurve')) {
  Plotly.newPlot('fig-kcurve', [
    {type: 'scatter', mode: 'lines+markers', name: 'silhouette', x: D.k_curve.k, y: D.k_curve.silhouette},
    {type: 'scatter', mode: 'lines+markers', name: 'inertia', x: D.k_curve.k, y: D.k_curve.inertia,
     yaxis: 'y2', line: {dash: 'dot'}}],
    Object.assign({}, LAYOUT, {xaxis: {title: {text: 'k'}, dtick: 1}, yaxis: {title: {text: 'silhouette'}},
      yaxis2: {title: {text: 'inertia'}, overlaying: 'y', side: 'right'},
      shapes: D.k_curve.best ? [{type: 'line', x0: D.k_curve.best, x1: D.k_curve.best, yref: 'paper',
        y0: 0, y1: 1, line: {color: '#E15F99', dash: 'dash'}}] : []}), CFG);
}
if (D.contingency && el('fig-contingency')) {
  Plotly.newPlot('fig-contingency', [{type: 'heatmap', z: D.contingency.counts,
    x: D.contingency.clusters.map(c => 'k' + c), y: D.contingency.labels, colorscale: [[0, '#f7fbff'], [1, '#08306b']],
    hovertemplate: '%{y} · cluster %{x}: %{z}<extra></extra>'}],
    Object.assign({}, LAYOUT, {xaxis: {title: {text: 'k-means cluster'}}, margin: {l: 120, r: 10, t: 20, b: 40}}), CFG);
}
if (D.sanity && el('fig-sanity')) {
  Plotly.newPlot('fig-sanity', [{type: 'bar', x: D.sanity.labels, y: D.sanity.mean,
    error_y: {type: 'data', array: D.sanity.std, visible: true}, marker: {color: ['#E15F99', '#2E91E5']}}],
    Object.assign({}, LAYOUT, {yaxis: {title: {text: 'mean pairwise cosine'}, range: [-1, 1]}}), CFG);
}
if (D.timings.stages.length) {
  Plotly.newPlot('fig-timings', [{type: 'bar', orientation: 'h', y: D.timings.stages,
    x: D.timings.seconds, marker: {color: '#2E91E5'}}],
    Object.assign({}, LAYOUT, {xaxis: {title: {text: 'seconds'}}, yaxis: {autorange: 'reversed'},
      margin: {l: 140, r: 10, t: 20, b: 40}}), CFG);
} else { empty('fig-timings', 'no timings'); }
})();
