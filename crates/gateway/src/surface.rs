//! The public surfaces the gateway serves, one per service.

use std::fmt;

/// A group of public routes owned by one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    Auth,
    Rest,
    Storage,
    Realtime,
    Meta,
    /// The gateway's own routes (`/health`, unknown paths).
    Edge,
}

impl Surface {
    /// Every surface backed by a service.
    pub const SERVICES: [Surface; 5] = [
        Surface::Auth,
        Surface::Rest,
        Surface::Storage,
        Surface::Realtime,
        Surface::Meta,
    ];

    /// The public path prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Auth => "/auth/v1",
            Self::Rest => "/rest/v1",
            Self::Storage => "/storage/v1",
            Self::Realtime => "/realtime/v1",
            Self::Meta => "/pg",
            Self::Edge => "",
        }
    }

    /// Lower-case name, used in logs, metrics and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Rest => "rest",
            Self::Storage => "storage",
            Self::Realtime => "realtime",
            Self::Meta => "meta",
            Self::Edge => "edge",
        }
    }

    /// The surface a request path belongs to.
    pub fn of_path(path: &str) -> Self {
        Self::SERVICES
            .into_iter()
            .find(|s| {
                path.strip_prefix(s.prefix())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .unwrap_or(Self::Edge)
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_surfaces() {
        assert_eq!(Surface::of_path("/auth/v1/token"), Surface::Auth);
        assert_eq!(Surface::of_path("/rest/v1"), Surface::Rest);
        assert_eq!(Surface::of_path("/rest/v1x"), Surface::Edge);
        assert_eq!(Surface::of_path("/pg/tables"), Surface::Meta);
        assert_eq!(Surface::of_path("/pgx"), Surface::Edge);
        assert_eq!(Surface::of_path("/health"), Surface::Edge);
    }
}
