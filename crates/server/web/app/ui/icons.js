// Line icons as inline SVG built with DOM APIs (no emoji font needed, CSP
// friendly). Each icon is a list of [tag, attributes] on a 24x24 grid.

const NS = 'http://www.w3.org/2000/svg';
const l = (x1, y1, x2, y2) => ['line', { x1, y1, x2, y2 }];
const p = (d) => ['path', { d }];
const pl = (points) => ['polyline', { points }];

const ICONS = {
  attach: [p('M21.44 11.05l-9.19 9.19a6 6 0 0 1-8.49-8.49l9.19-9.19a4 4 0 0 1 5.66 5.66l-9.2 9.19a2 2 0 0 1-2.83-2.83l8.49-8.48')],
  mic: [p('M12 1a3 3 0 0 0-3 3v8a3 3 0 0 0 6 0V4a3 3 0 0 0-3-3z'), p('M19 10v2a7 7 0 0 1-14 0v-2'), l(12, 19, 12, 23), l(8, 23, 16, 23)],
  stop: [['rect', { x: 6, y: 6, width: 12, height: 12, rx: 2 }]],
  send: [l(22, 2, 11, 13), ['polygon', { points: '22 2 15 22 11 13 2 9 22 2' }]],
  users: [p('M17 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2'), ['circle', { cx: 9, cy: 7, r: 4 }], p('M23 21v-2a4 4 0 0 0-3-3.87'), p('M16 3.13a4 4 0 0 1 0 7.75')],
  userPlus: [p('M16 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2'), ['circle', { cx: 8.5, cy: 7, r: 4 }], l(20, 8, 20, 14), l(23, 11, 17, 11)],
  newChat: [p('M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z'), l(12, 7, 12, 13), l(9, 10, 15, 10)],
  edit: [p('M12 20h9'), p('M16.5 3.5a2.121 2.121 0 0 1 3 3L7 19l-4 1 1-4L16.5 3.5z')],
  bell: [p('M18 8A6 6 0 0 0 6 8c0 7-3 9-3 9h18s-3-2-3-9'), p('M13.73 21a2 2 0 0 1-3.46 0')],
  bellOff: [p('M18 8A6 6 0 0 0 6 8c0 7-3 9-3 9h18s-3-2-3-9'), p('M13.73 21a2 2 0 0 1-3.46 0'), l(1, 1, 23, 23)],
  signOut: [p('M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4'), pl('16 17 21 12 16 7'), l(21, 12, 9, 12)],
  back: [l(19, 12, 5, 12), pl('12 19 5 12 12 5')],
  reply: [pl('9 14 4 9 9 4'), p('M20 20v-7a4 4 0 0 0-4-4H4')],
  smile: [['circle', { cx: 12, cy: 12, r: 10 }], p('M8 14s1.5 2 4 2 4-2 4-2'), l(9, 9, 9.01, 9), l(15, 9, 15.01, 9)],
  trash: [pl('3 6 5 6 21 6'), p('M19 6v14a2 2 0 0 1-2 2H7a2 2 0 0 1-2-2V6m3 0V4a2 2 0 0 1 2-2h4a2 2 0 0 1 2 2v2')],
  close: [l(18, 6, 6, 18), l(6, 6, 18, 18)],
  phone: [p('M22 16.92v3a2 2 0 0 1-2.18 2 19.79 19.79 0 0 1-8.63-3.07 19.5 19.5 0 0 1-6-6 19.79 19.79 0 0 1-3.07-8.67A2 2 0 0 1 4.11 2h3a2 2 0 0 1 2 1.72c.13.96.36 1.9.7 2.81a2 2 0 0 1-.45 2.11L8.09 9.91a16 16 0 0 0 6 6l1.27-1.27a2 2 0 0 1 2.11-.45c.91.34 1.85.57 2.81.7A2 2 0 0 1 22 16.92z')],
  video: [['polygon', { points: '23 7 16 12 23 17 23 7' }], ['rect', { x: 1, y: 5, width: 15, height: 14, rx: 2 }]],
  lock: [['rect', { x: 3, y: 11, width: 18, height: 11, rx: 2 }], p('M7 11V7a5 5 0 0 1 10 0v4')],
  shield: [p('M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z')],
  file: [p('M13 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V9z'), pl('13 2 13 9 20 9')],
};

/** An SVG icon element (aria-hidden), or null for an unknown name. */
export function icon(name, size = 20) {
  const parts = ICONS[name];
  if (!parts) return null;
  const svg = document.createElementNS(NS, 'svg');
  for (const [k, v] of Object.entries({
    viewBox: '0 0 24 24', width: size, height: size, fill: 'none', stroke: 'currentColor',
    'stroke-width': 2, 'stroke-linecap': 'round', 'stroke-linejoin': 'round', 'aria-hidden': 'true', focusable: 'false',
  })) svg.setAttribute(k, String(v));
  for (const [tag, attrs] of parts) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    svg.append(el);
  }
  return svg;
}
