export * from './errors';
export * from './schema';
export * from './api';
export * from './protocol';
export * from './bridge';
