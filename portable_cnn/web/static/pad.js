// The drawing pad: white ink on black (as MNIST's digits), drawn with pointer events (mouse, pen or finger).
// onStroke() is called as the drawing changes; pixels() gives it as rows of 0-255 gray values.

const SENT_SIDE = 140; // the drawing is sent at half its size: plenty for a 20x20 digit, a quarter of the numbers

export class Pad {
  constructor(canvas, onStroke) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d", { willReadFrequently: true });
    this.onStroke = onStroke;
    this.last = null;
    this.empty = true;
    canvas.addEventListener("pointerdown", (event) => this.down(event));
    canvas.addEventListener("pointermove", (event) => this.move(event));
    for (const name of ["pointerup", "pointercancel"]) canvas.addEventListener(name, () => this.up());
    this.clear();
  }

  clear() {
    const { context, canvas } = this;
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    this.empty = true;
  }

  point(event) {
    const box = this.canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * this.canvas.width) / box.width,
      ((event.clientY - box.top) * this.canvas.height) / box.height,
    ];
  }

  down(event) {
    this.canvas.setPointerCapture(event.pointerId);
    this.last = this.point(event);
    this.line(this.last, this.last);
  }

  move(event) {
    if (this.last === null) return;
    const next = this.point(event);
    this.line(this.last, next);
    this.last = next;
  }

  up() {
    if (this.last === null) return;
    this.last = null;
    this.onStroke();
  }

  line(from, to) {
    const context = this.context;
    const width = this.canvas.width / 14;
    context.fillStyle = context.strokeStyle = "#fff";
    context.lineWidth = width;
    context.lineCap = "round";
    context.beginPath();
    if (from[0] === to[0] && from[1] === to[1]) {
      context.arc(...from, width / 2, 0, 2 * Math.PI); // a dot: a line of no length draws nothing
      context.fill();
    } else {
      context.moveTo(...from);
      context.lineTo(...to);
      context.stroke();
    }
    this.empty = false;
    this.onStroke();
  }

  pixels() {
    const small = document.createElement("canvas");
    small.width = small.height = SENT_SIDE;
    const context = small.getContext("2d");
    context.imageSmoothingQuality = "high";
    context.drawImage(this.canvas, 0, 0, SENT_SIDE, SENT_SIDE);
    const data = context.getImageData(0, 0, SENT_SIDE, SENT_SIDE).data;
    const rows = [];
    for (let y = 0; y < SENT_SIDE; y++) {
      const row = new Array(SENT_SIDE);
      for (let x = 0; x < SENT_SIDE; x++) row[x] = data[(y * SENT_SIDE + x) * 4];
      rows.push(row);
    }
    return rows;
  }
}
