import { mount } from 'svelte';
import App from './App.svelte';
import { studioContext } from './lib/context';
import { Studio } from './lib/state/studio.svelte';
import { createApi } from './lib/transport';
import './styles/base.css';

// The studio server signs the browser in with a cookie when the page is loaded with ?token=…;
// the token has done its job by now and should not linger in the address bar, history or bookmarks.
const url = new URL(location.href);
if (url.searchParams.has('token')) {
  url.searchParams.delete('token');
  history.replaceState(history.state, '', url.pathname + url.search + url.hash);
}

const studio = new Studio(createApi());
studio.start();

const target = document.getElementById('app');
if (!target) throw new Error('index.html has no #app element');
mount(App, { target, context: studioContext(studio) });
