//! Friends, blocks and group management over HTTP.

use confab_proto::api::{
    AddMembersRequest, BlockList, Conversation, Friend, FriendList, FriendRequest,
    FriendRequestCreate, FriendRequestList, FriendRequestResult, Member, MemberList, Role,
    UpdateConversationRequest, UpdateMemberRequest, User,
};
use confab_proto::{ConversationId, UserId};
use reqwest::Method;

use crate::client::Client;
use crate::error::Result;

/// Which friend requests to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Requests others sent me.
    Incoming,
    /// Requests I sent.
    Outgoing,
}

impl Client {
    /// Asks `user_id` to be friends. If they had asked first, this accepts
    /// their request and the answer says `accepted`.
    pub async fn send_friend_request(
        &self,
        user_id: UserId,
        message: Option<&str>,
    ) -> Result<FriendRequestResult> {
        let req = FriendRequestCreate {
            user_id,
            message: message.map(str::to_owned),
        };
        self.call(Method::POST, "/v1/friends/requests", &[], Some(&req))
            .await
    }

    /// Pending friend requests, oldest first.
    pub async fn friend_requests(&self, direction: Direction) -> Result<Vec<FriendRequest>> {
        let d = match direction {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        };
        let list: FriendRequestList = self
            .call(
                Method::GET,
                "/v1/friends/requests",
                &[("direction", d.to_owned())],
                None::<&()>,
            )
            .await?;
        Ok(list.requests)
    }

    /// Accepts request `id`; returns the new friend.
    pub async fn accept_friend_request(&self, id: i64) -> Result<FriendRequestResult> {
        self.call(
            Method::POST,
            &format!("/v1/friends/requests/{id}/accept"),
            &[],
            None::<&()>,
        )
        .await
    }

    /// Declines request `id`.
    pub async fn decline_friend_request(&self, id: i64) -> Result<()> {
        self.request_empty(
            Method::POST,
            &format!("/v1/friends/requests/{id}/decline"),
            None::<&()>,
        )
        .await
    }

    /// Withdraws my own request `id`.
    pub async fn cancel_friend_request(&self, id: i64) -> Result<()> {
        self.request_empty(
            Method::DELETE,
            &format!("/v1/friends/requests/{id}"),
            None::<&()>,
        )
        .await
    }

    /// STUN/TURN servers for a call, with fresh TURN credentials.
    pub async fn ice_servers(&self) -> Result<confab_proto::api::IceServers> {
        self.call(Method::GET, "/v1/calls/ice-servers", &[], None::<&()>)
            .await
    }

    /// My friends with their presence.
    pub async fn friends(&self) -> Result<Vec<Friend>> {
        let list: FriendList = self
            .call(Method::GET, "/v1/friends", &[], None::<&()>)
            .await?;
        Ok(list.friends)
    }

    /// Ends a friendship.
    pub async fn unfriend(&self, user_id: UserId) -> Result<()> {
        self.request_empty(
            Method::DELETE,
            &format!("/v1/friends/{user_id}"),
            None::<&()>,
        )
        .await
    }

    /// Blocks a user (ends a friendship with them, too).
    pub async fn block(&self, user_id: UserId) -> Result<()> {
        self.request_empty(Method::PUT, &format!("/v1/blocks/{user_id}"), None::<&()>)
            .await
    }

    /// Lifts a block.
    pub async fn unblock(&self, user_id: UserId) -> Result<()> {
        self.request_empty(
            Method::DELETE,
            &format!("/v1/blocks/{user_id}"),
            None::<&()>,
        )
        .await
    }

    /// Users I blocked.
    pub async fn blocked_users(&self) -> Result<Vec<User>> {
        let list: BlockList = self
            .call(Method::GET, "/v1/blocks", &[], None::<&()>)
            .await?;
        Ok(list.users)
    }

    /// Every member of a conversation.
    pub async fn members(&self, id: ConversationId) -> Result<Vec<Member>> {
        let list: MemberList = self
            .call(
                Method::GET,
                &format!("/v1/conversations/{id}/members"),
                &[],
                None::<&()>,
            )
            .await?;
        Ok(list.members)
    }

    /// Adds users to a group; returns the members after.
    pub async fn add_members(
        &self,
        id: ConversationId,
        user_ids: &[UserId],
    ) -> Result<Vec<Member>> {
        let req = AddMembersRequest {
            user_id: None,
            user_ids: user_ids.to_vec(),
        };
        let list: MemberList = self
            .call(
                Method::POST,
                &format!("/v1/conversations/{id}/members"),
                &[],
                Some(&req),
            )
            .await?;
        Ok(list.members)
    }

    /// Removes `user_id` from a group (leaves when it is me).
    pub async fn remove_member(&self, id: ConversationId, user_id: UserId) -> Result<()> {
        self.request_empty(
            Method::DELETE,
            &format!("/v1/conversations/{id}/members/{user_id}"),
            None::<&()>,
        )
        .await
    }

    /// Leaves a group.
    pub async fn leave(&self, id: ConversationId) -> Result<()> {
        let me = self
            .session()
            .map(|s| s.user.id)
            .ok_or(crate::error::Error::NoSession)?;
        self.remove_member(id, me).await
    }

    /// Changes a member's role; `Role::Owner` hands ownership over.
    pub async fn set_role(
        &self,
        id: ConversationId,
        user_id: UserId,
        role: Role,
    ) -> Result<Vec<Member>> {
        let list: MemberList = self
            .call(
                Method::PATCH,
                &format!("/v1/conversations/{id}/members/{user_id}"),
                &[],
                Some(&UpdateMemberRequest { role }),
            )
            .await?;
        Ok(list.members)
    }

    /// Changes a conversation: group settings, or my own `muted`.
    pub async fn update_conversation(
        &self,
        id: ConversationId,
        patch: &UpdateConversationRequest,
    ) -> Result<Conversation> {
        self.call(
            Method::PATCH,
            &format!("/v1/conversations/{id}"),
            &[],
            Some(patch),
        )
        .await
    }

    /// Mutes or unmutes a conversation for me.
    pub async fn set_muted(&self, id: ConversationId, muted: bool) -> Result<Conversation> {
        let patch = UpdateConversationRequest {
            muted: Some(muted),
            ..Default::default()
        };
        self.update_conversation(id, &patch).await
    }
}
