// The call page's player: a native <audio controls> (the keyboard-accessible control) that recovers
// when its signed URL expires, and a two-lane waveform (caller, agent) that seeks on click.
import WaveSurfer from "./vendor/wavesurfer/wavesurfer.esm.js";

// Twilio's dual-channel recordings put the parent call leg on the first channel and the other party on
// the second ("The first channel of a dual-channel recording contains the parent call and the second
// channel contains the child call": RecordingChannels, https://www.twilio.com/docs/voice/api/call-resource;
// Flex's guide to dual-channel recordings: customer channel left, agent right,
// https://www.twilio.com/docs/flex/developer/insights/enable-dual-channel-recordings). Our recording is
// started on the caller's inbound call, so channel 1 is the caller and channel 2 the agent.
const LANES = [
  { label: "Caller", className: "lane-caller", waveColor: "#6f9be0", progressColor: "#1f5fbf" },
  { label: "Agent", className: "lane-agent", waveColor: "#d9a066", progressColor: "#8a4b00" },
];
const MONO = { label: "Both sides", className: "lane-both", waveColor: "#9aa3b5", progressColor: "#1d2433" };
const LANE_HEIGHT = 48;
const PEAKS = 1000;
const MAX_RECOVERIES_PER_MINUTE = 3;

export const clock = (seconds) => {
  const whole = Math.max(0, Math.floor(seconds || 0));
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
};

function link(text, href) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

// Why the audio cannot be reloaded, from the page's state: null when it can be.
async function obstacle(stateUrl) {
  let response;
  try {
    response = await fetch(stateUrl, { cache: "no-store", credentials: "same-origin" });
  } catch {
    return { text: "The recording could not be reloaded: the connection is down.", retry: true };
  }
  if (response.status === 401) {
    const here = location.pathname + location.search;
    return {
      text: "Your session has ended, so the recording cannot be reloaded. ",
      action: link("Sign in again", `/dashboard/sign-in?next=${encodeURIComponent(here)}`),
    };
  }
  if (response.status === 404) return { text: "This call is no longer available." };
  if (!response.ok) return { text: "The recording could not be reloaded.", retry: true };
  const state = await response.json();
  if (state.recording.status !== "available") {
    return { text: `This recording is no longer available. ${state.explanation}` };
  }
  return null;
}

function recover(audio, status) {
  const wanted = { time: 0, playing: false };
  let recovering = false;
  let recoveries = [];
  const report = (text, problem = false, action = null) => {
    status.classList.toggle("problem", problem);
    status.replaceChildren(text, ...(action ? [action] : []));
  };
  const remember = () => {
    if (!recovering && !audio.error) wanted.time = audio.currentTime;
  };
  audio.addEventListener("timeupdate", remember);
  audio.addEventListener("seeking", remember);
  audio.addEventListener("play", () => { if (!recovering) wanted.playing = true; });
  audio.addEventListener("pause", () => { if (!recovering && !audio.error) wanted.playing = false; });

  const giveUp = (text, action = null) => {
    recovering = false;
    const reload = action ?? link("Reload the page", location.href);
    report(`${text} You were at ${clock(wanted.time)}. `, true, reload);
  };

  audio.addEventListener("error", async () => {
    // A signed URL lives minutes (CALLREC_PLAYBACK_URL_TTL_S); once it has expired, the next range
    // request (a seek, or more audio) gets 403. /audio mints a fresh one (a new audit entry).
    const now = Date.now();
    recoveries = recoveries.filter((t) => now - t < 60000);
    if (recoveries.length >= MAX_RECOVERIES_PER_MINUTE) {
      giveUp("The recording keeps failing to load.");
      return;
    }
    recoveries.push(now);
    recovering = true;
    report("The recording's link expired; getting a new one…");
    const problem = await obstacle(audio.dataset.stateUrl);
    if (problem) {
      giveUp(problem.text, problem.action ?? null);
      return;
    }
    audio.addEventListener("loadedmetadata", () => {
      audio.currentTime = Math.min(wanted.time, audio.duration || wanted.time);
      const resumed = wanted.playing ? audio.play().catch(() => null) : Promise.resolve();
      resumed.then(() => {
        recovering = false;
        const how = wanted.playing ? "playing again" : "ready";
        report(`Reconnected to the recording: ${how} at ${clock(wanted.time)}.`);
      });
    }, { once: true });
    audio.src = `${audio.dataset.src}?fresh=${now}`;
  });
}

async function peaksOf(url) {
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`audio: HTTP ${response.status}`);
  const context = new OfflineAudioContext({ numberOfChannels: 2, length: 1, sampleRate: 8000 });
  const decoded = await context.decodeAudioData(await response.arrayBuffer());
  const channels = [];
  let loudest = 0;
  for (let c = 0; c < Math.min(decoded.numberOfChannels, 2); c += 1) {
    const samples = decoded.getChannelData(c);
    const step = Math.max(1, Math.floor(samples.length / PEAKS));
    const peaks = [];
    for (let start = 0; start < samples.length; start += step) {
      let peak = 0;
      for (let i = start; i < Math.min(start + step, samples.length); i += 1) {
        peak = Math.max(peak, Math.abs(samples[i]));
      }
      peaks.push(peak);
      loudest = Math.max(loudest, peak);
    }
    channels.push(peaks);
  }
  // One scale for both lanes, so a quiet side looks quiet.
  const scale = loudest > 0 ? 1 / loudest : 1;
  return { duration: decoded.duration, peaks: channels.map((p) => p.map((v) => v * scale)) };
}

async function waveform(audio, figure, nonce) {
  let data;
  try {
    data = await peaksOf(audio.dataset.src);
  } catch {
    // With S3 the audio is on another origin: drawing it needs a CORS rule on the bucket.
    figure.hidden = true;
    figure.dataset.waveform = "unavailable";
    return;
  }
  const lanes = data.peaks.length === 2 ? LANES : [MONO];
  const labels = figure.querySelector("#lane-labels");
  labels.replaceChildren(...lanes.map((lane) => {
    const label = document.createElement("span");
    label.className = lane.className;
    label.textContent = lane.label;
    return label;
  }));
  figure.hidden = false;
  WaveSurfer.create({
    container: figure.querySelector("#waveform"),
    media: audio,
    url: audio.currentSrc || audio.src,
    peaks: data.peaks,
    duration: data.duration,
    height: LANE_HEIGHT,
    splitChannels: lanes.map(({ waveColor, progressColor }) => ({ waveColor, progressColor })),
    cursorColor: "#1d2433",
    cspNonce: nonce,
  });
  figure.dataset.lanes = String(lanes.length);
  figure.dataset.waveform = "drawn";
}

export function initPlayer(section, { nonce }) {
  const audio = section?.querySelector("audio#player");
  if (!audio || audio.dataset.ready) return;
  audio.dataset.ready = "1";
  recover(audio, section.querySelector("#player-status"));
  const figure = section.querySelector("#waveform-figure");
  if (figure) waveform(audio, figure, nonce);
}
